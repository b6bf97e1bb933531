//! Chat request parsing and deterministic answers: token counts, JSON body and SSE events.

use serde_json::Value;

use crate::bodies::json_str;

/// Words the answers cycle through, one token each.
const WORDS: [&str; 12] = [
    "Simulated",
    "answer",
    "from",
    "the",
    "upstream",
    "simulator",
    "with",
    "deterministic",
    "tokens",
    "for",
    "gateway",
    "tests",
];

/// The parts of a chat request the simulator acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Requested model.
    pub model: String,
    /// Estimated prompt tokens (see [`prompt_tokens`]).
    pub prompt_tokens: u64,
    /// `max_completion_tokens` / `max_tokens`, the smaller if both are given.
    pub max_tokens: Option<u64>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
}

impl ChatRequest {
    /// Parses a request body; the error says what is wrong, for a 400.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, String> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
        if !v.is_object() {
            return Err("The request body must be a JSON object.".into());
        }
        let model = match &v["model"] {
            Value::String(m) if !m.is_empty() => m.clone(),
            Value::Null => return Err("Missing required parameter: 'model'.".into()),
            _ => return Err("Invalid type for 'model': expected a non-empty string.".into()),
        };
        let messages = match &v["messages"] {
            Value::Array(m) if !m.is_empty() => m,
            Value::Array(_) => return Err("'messages' must not be empty.".into()),
            Value::Null => return Err("Missing required parameter: 'messages'.".into()),
            _ => return Err("Invalid type for 'messages': expected an array.".into()),
        };
        let stream = match &v["stream"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err("Invalid type for 'stream': expected a boolean.".into()),
        };
        let max_tokens = ["max_tokens", "max_completion_tokens"]
            .iter()
            .filter_map(|k| v[*k].as_u64())
            .min();
        Ok(ChatRequest {
            model,
            prompt_tokens: prompt_tokens(messages),
            max_tokens,
            stream,
            include_usage: v["stream_options"]["include_usage"] == Value::Bool(true),
        })
    }

    /// Completion tokens of the answer: the request's cap, bounded by the configured size.
    pub fn completion_tokens(&self, configured: u32) -> u64 {
        let configured = u64::from(configured);
        self.max_tokens.map_or(configured, |m| m.min(configured))
    }
}

/// Per message 4 + ceil(chars / 4) of its text, plus 3 for the reply's priming.
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    let per_message = messages.iter().map(|m| {
        let chars: usize = match &m["content"] {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .map(|t| t.chars().count())
                .sum(),
            _ => 0,
        };
        4 + (chars as u64).div_ceil(4)
    });
    per_message.sum::<u64>() + 3
}

/// A deterministic answer, rendered as one JSON body or as SSE events.
#[derive(Debug, Clone)]
pub struct Completion {
    /// `chatcmpl-<request id>`.
    pub id: String,
    /// Model named in the answer.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// Prompt tokens charged.
    pub prompt_tokens: u64,
    /// Completion tokens produced (one per word).
    pub completion_tokens: u64,
}

impl Completion {
    /// The answer's words.
    fn words(&self) -> impl Iterator<Item = &'static str> {
        WORDS
            .iter()
            .copied()
            .cycle()
            .take(self.completion_tokens as usize)
    }

    /// The whole answer text: the words joined by spaces.
    pub fn content(&self) -> String {
        self.words().collect::<Vec<_>>().join(" ")
    }

    fn usage(&self) -> String {
        format!(
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
            self.prompt_tokens,
            self.completion_tokens,
            self.prompt_tokens + self.completion_tokens
        )
    }

    /// Non-stream `chat.completion` body.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"finish_reason":"stop","logprobs":null}}],"usage":{},"system_fingerprint":null}}"#,
            json_str(&self.id),
            self.created,
            json_str(&self.model),
            json_str(&self.content()),
            self.usage()
        )
    }

    /// One `data: <chunk>\n\n` event with the given choices and usage JSON.
    fn event(&self, choices: &str, usage: &str) -> String {
        format!(
            "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":{choices},\"usage\":{usage},\"system_fingerprint\":null}}\n\n",
            json_str(&self.id),
            self.created,
            json_str(&self.model)
        )
    }

    fn delta_event(&self, delta: &str, finish_reason: &str) -> String {
        let choices = format!(
            r#"[{{"index":0,"delta":{delta},"finish_reason":{finish_reason},"logprobs":null}}]"#
        );
        self.event(&choices, "null")
    }

    /// First event: the assistant role with empty content.
    pub fn role_event(&self) -> String {
        self.delta_event(r#"{"role":"assistant","content":""}"#, "null")
    }

    /// One event per word; their contents concatenate to [`Completion::content`].
    pub fn content_events(&self) -> Vec<String> {
        let n = self.completion_tokens as usize;
        self.words()
            .enumerate()
            .map(|(i, word)| {
                let text = if i + 1 < n {
                    format!("{word} ")
                } else {
                    word.to_string()
                };
                self.delta_event(&format!(r#"{{"content":{}}}"#, json_str(&text)), "null")
            })
            .collect()
    }

    /// Events after the content: finish, optional usage, `[DONE]`.
    pub fn closing_events(&self, include_usage: bool) -> Vec<String> {
        let mut events = vec![self.delta_event("{}", r#""stop""#)];
        if include_usage {
            events.push(self.event("[]", &self.usage()));
        }
        events.push("data: [DONE]\n\n".to_string());
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(n: u64) -> Completion {
        Completion {
            id: "chatcmpl-1".into(),
            model: "qwen-plus".into(),
            created: 1,
            prompt_tokens: 9,
            completion_tokens: n,
        }
    }

    #[test]
    fn counts_prompt_tokens() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hello"},
            {"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url"}]},
            {"role":"assistant","content":null}]}"#;
        let r = ChatRequest::parse(body).unwrap();
        // (4 + 2) + (4 + 1) + 4 + 3
        assert_eq!(r.prompt_tokens, 18);
        assert!(!r.stream);
        assert_eq!(r.completion_tokens(12), 12);
    }

    #[test]
    fn max_tokens_caps_completion() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":7,"stream":true,"stream_options":{"include_usage":true}}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert_eq!(r.completion_tokens(12), 5);
        assert!(r.stream && r.include_usage);
    }

    #[test]
    fn rejects_bad_bodies() {
        for body in [
            &b"nope"[..],
            br#"[]"#,
            br#"{"messages":[{}]}"#,
            br#"{"model":"m"}"#,
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":3,"messages":[{}]}"#,
        ] {
            assert!(ChatRequest::parse(body).is_err());
        }
    }

    #[test]
    fn stream_contents_equal_body_content() {
        let c = completion(14);
        let body: Value = serde_json::from_str(&c.to_json()).unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.starts_with("Simulated answer"));
        assert_eq!(content.split(' ').count(), 14);
        let joined: String = c
            .content_events()
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_str(e["data: ".len()..].trim_end()).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(joined, content);
        assert_eq!(body["usage"]["total_tokens"], 23);
    }
}
