//! Chat and embeddings request parsing and deterministic answers: token counts, JSON body
//! and SSE events (the Responses API's own in `responses.rs`, text completion's in `text.rs`).

use serde_json::{json, Value};

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
    /// `n`: how many choices to answer with, each counted in full.
    pub choices: u64,
    /// Which API's request it is, and what its answer holds.
    pub shape: Shape,
    /// A Responses request's `previous_response_id`: the stored response it continues.
    pub previous_response_id: Option<String>,
    /// A Responses request's input items (a string input as one user message).
    pub input: Vec<Value>,
    /// A chat's prompt prefixes, one per message: (hash of the messages up to it, their
    /// tokens). What the implicit prompt cache matches (`SimState::cached_tokens`).
    pub prefixes: Vec<(u64, u64)>,
    /// The prefix up to the last message holding a content block marked
    /// `"cache_control": {"type": "ephemeral"}`, if any: what DashScope's explicit cache
    /// keeps (`SimState::explicit_cache`).
    pub marked: Option<(u64, u64)>,
}

/// The API a request came to, and what its answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Chat completions.
    Chat,
    /// Embeddings: one vector of `dimensions` (8 when not given) per input.
    Embeddings { inputs: usize, dimensions: usize },
    /// The Responses API.
    Response,
    /// Text completion: `generated` answers made and counted (each prompt's `best_of`
    /// candidates, at least its `n` choices).
    Text { generated: u64 },
}

impl ChatRequest {
    /// Parses a request body; the error says what is wrong, for a 400.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, String> {
        let (v, model) = object_with_model(body)?;
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
        let choices = match &v["n"] {
            Value::Null => 1,
            n => n
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or("Invalid value for 'n': expected a positive integer.")?,
        };
        let max_tokens = ["max_tokens", "max_completion_tokens"]
            .iter()
            .filter_map(|k| v[*k].as_u64())
            .min();
        let prefixes = prefixes(messages);
        Ok(ChatRequest {
            model,
            prompt_tokens: prompt_tokens(messages),
            max_tokens,
            stream,
            include_usage: v["stream_options"]["include_usage"] == Value::Bool(true),
            choices,
            shape: Shape::Chat,
            previous_response_id: None,
            input: Vec::new(),
            marked: marked(messages, &prefixes),
            prefixes,
        })
    }

    /// Parses an embeddings body: `input` a string or an array of strings, of token ids or of
    /// arrays of token ids; its tokens are ceil(chars / 4) a text, one a token id.
    pub fn parse_embeddings(body: &[u8]) -> Result<ChatRequest, String> {
        let (v, model) = object_with_model(body)?;
        let inputs: Vec<&Value> = match &v["input"] {
            Value::String(_) => vec![&v["input"]],
            Value::Array(items) if items.is_empty() => {
                return Err("Invalid value for 'input': must not be empty.".into())
            }
            Value::Array(items) if items.iter().all(Value::is_u64) => vec![&v["input"]],
            Value::Array(items) => items.iter().collect(),
            _ => return Err("Invalid value for 'input': expected a string or an array.".into()),
        };
        let tokens = inputs.iter().map(|input| match input {
            Value::String(s) => Ok((s.chars().count() as u64).div_ceil(4)),
            Value::Array(ids) if ids.iter().all(Value::is_u64) => Ok(ids.len() as u64),
            _ => Err("Invalid value for 'input': mixed types.".to_string()),
        });
        let prompt_tokens = tokens.sum::<Result<u64, String>>()?;
        let dimensions = v["dimensions"]
            .as_u64()
            .map_or(8, |d| d.clamp(1, 4096) as usize);
        Ok(ChatRequest {
            model,
            prompt_tokens,
            max_tokens: Some(0),
            stream: false,
            include_usage: false,
            choices: 1,
            shape: Shape::Embeddings {
                inputs: inputs.len(),
                dimensions,
            },
            previous_response_id: None,
            input: Vec::new(),
            prefixes: Vec::new(),
            marked: None,
        })
    }

    /// Completion tokens of each choice: the request's cap, bounded by the configured size.
    pub fn completion_tokens(&self, configured: u32) -> u64 {
        let configured = u64::from(configured);
        self.max_tokens.map_or(configured, |m| m.min(configured))
    }
}

/// A request body: a JSON object and its non-empty `model`.
pub(crate) fn object_with_model(body: &[u8]) -> Result<(Value, String), String> {
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
    Ok((v, model))
}

/// Per message 4 + ceil(chars / 4) of its text, plus 3 for the reply's priming.
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    messages.iter().map(message_tokens).sum::<u64>() + 3
}

fn message_tokens(m: &Value) -> u64 {
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
}

/// Each prefix of `messages` ending at a message: its hash and its tokens (without the
/// reply's priming).
fn prefixes(messages: &[Value]) -> Vec<(u64, u64)> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    let mut tokens = 0;
    let each = messages.iter().map(|m| {
        m.to_string().hash(&mut hasher);
        tokens += message_tokens(m);
        (hasher.finish(), tokens)
    });
    each.collect()
}

/// The prefix of `messages` up to the last one with a content block marked for the explicit
/// cache (`"cache_control": {"type": "ephemeral"}`): its hash and tokens, from `prefixes`.
fn marked(messages: &[Value], prefixes: &[(u64, u64)]) -> Option<(u64, u64)> {
    let is_marked = |m: &Value| {
        let blocks = m["content"].as_array().into_iter().flatten();
        blocks
            .into_iter()
            .any(|b| b["cache_control"]["type"] == "ephemeral")
    };
    let last = messages.iter().rposition(is_marked)?;
    prefixes.get(last).copied()
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
    /// Of which read from the prompt cache (the implicit one, or the explicit one).
    pub cached_tokens: u64,
    /// Of which written to the explicit cache (a chat's `cache_control` markers, or the
    /// session cache of DashScope's Responses API, billed as explicit): then the usage says
    /// so as DashScope does.
    pub explicit_writes: Option<u64>,
    /// Completion tokens of each choice (one per word).
    pub completion_tokens: u64,
    /// Choices answered (the request's `n`), each with the same words.
    pub choices: u64,
    /// The request's API: what the answer holds.
    pub shape: Shape,
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

    /// The answer text in streamed pieces, a word each (with the space after it).
    pub fn content_pieces(&self) -> Vec<String> {
        let n = self.completion_tokens as usize;
        self.words()
            .enumerate()
            .map(|(i, word)| {
                if i + 1 < n {
                    format!("{word} ")
                } else {
                    word.to_string()
                }
            })
            .collect()
    }

    /// The simulator's request id the answer's ids are made of.
    pub fn request_id(&self) -> &str {
        self.id.trim_start_matches("chatcmpl-")
    }

    /// Completion tokens of the whole answer, every choice's: what usage reports and the
    /// limits count.
    pub fn total_completion_tokens(&self) -> u64 {
        match self.shape {
            Shape::Text { generated } => self.completion_tokens * generated,
            _ => self.completion_tokens * self.choices,
        }
    }

    pub(crate) fn usage_json(&self) -> Value {
        let completion = self.total_completion_tokens();
        let mut usage = json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        });
        if let Some(written) = self.explicit_writes {
            usage["prompt_tokens_details"] = self.explicit_details(written);
        } else if self.cached_tokens > 0 {
            usage["prompt_tokens_details"] = json!({"cached_tokens": self.cached_tokens});
        }
        usage
    }

    /// DashScope's details of an explicit-cache request: what was read, what was written.
    pub(crate) fn explicit_details(&self, written: u64) -> Value {
        json!({
            "cache_creation": {"ephemeral_5m_input_tokens": written},
            "cache_creation_input_tokens": written,
            "cache_type": "ephemeral",
            "cached_tokens": self.cached_tokens,
        })
    }

    fn usage(&self) -> String {
        self.usage_json().to_string()
    }

    /// Non-stream `chat.completion` body (or the embeddings list, for an embeddings request).
    pub fn to_json(&self) -> String {
        if self.shape == Shape::Response {
            return self.response_json();
        }
        if let Shape::Text { .. } = self.shape {
            return self.text_json();
        }
        if let Shape::Embeddings { inputs, dimensions } = self.shape {
            let vector: Vec<String> = (0..dimensions).map(|i| format!("0.{}", i % 10)).collect();
            let data: Vec<String> = (0..inputs)
                .map(|i| {
                    format!(
                        r#"{{"object":"embedding","index":{i},"embedding":[{}]}}"#,
                        vector.join(",")
                    )
                })
                .collect();
            return format!(
                r#"{{"object":"list","data":[{}],"model":{},"usage":{{"prompt_tokens":{p},"total_tokens":{p}}},"id":{}}}"#,
                data.join(","),
                json_str(&self.model),
                json_str(self.request_id()),
                p = self.prompt_tokens,
            );
        }
        let content = json_str(&self.content());
        let choices: Vec<String> = (0..self.choices)
            .map(|i| {
                format!(
                    r#"{{"index":{i},"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop","logprobs":null}}"#
                )
            })
            .collect();
        format!(
            r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"choices":[{}],"usage":{},"system_fingerprint":null}}"#,
            json_str(&self.id),
            self.created,
            json_str(&self.model),
            choices.join(","),
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

    /// One event per choice, each with `delta`, as OpenAI interleaves choices.
    fn delta_events(&self, delta: &str, finish_reason: &str) -> Vec<String> {
        (0..self.choices)
            .map(|i| {
                let choices = format!(
                    r#"[{{"index":{i},"delta":{delta},"finish_reason":{finish_reason},"logprobs":null}}]"#
                );
                self.event(&choices, "null")
            })
            .collect()
    }

    /// First events: the assistant role with empty content (one per choice); a Responses
    /// stream's opening events.
    pub fn role_events(&self) -> Vec<String> {
        if self.shape == Shape::Response {
            return self.response_opening_events();
        }
        if let Shape::Text { .. } = self.shape {
            return Vec::new();
        }
        self.delta_events(r#"{"role":"assistant","content":""}"#, "null")
    }

    /// One event per word and choice; each choice's contents concatenate to
    /// [`Completion::content`].
    pub fn content_events(&self) -> Vec<String> {
        if self.shape == Shape::Response {
            return self.response_delta_events(self.content_pieces());
        }
        if let Shape::Text { .. } = self.shape {
            return self.text_content_events();
        }
        self.content_pieces()
            .iter()
            .flat_map(|text| {
                self.delta_events(&format!(r#"{{"content":{}}}"#, json_str(text)), "null")
            })
            .collect()
    }

    /// Events after the content: finish (per choice), optional usage, `[DONE]`; a Responses
    /// stream's closing events, its usage always in `response.completed`.
    pub fn closing_events(&self, include_usage: bool) -> Vec<String> {
        if self.shape == Shape::Response {
            return self.response_closing_events();
        }
        if let Shape::Text { .. } = self.shape {
            return self.text_closing_events(include_usage);
        }
        let mut events = self.delta_events("{}", r#""stop""#);
        if include_usage {
            events.push(self.event("[]", &self.usage()));
        }
        events.push("data: [DONE]\n\n".to_string());
        events
    }
}

#[cfg(test)]
impl Completion {
    /// The answer to `r` as the simulator makes it (at most 12 tokens a choice), for tests.
    pub(crate) fn answering(r: &ChatRequest) -> Completion {
        Completion {
            id: "chatcmpl-7".into(),
            model: r.model.clone(),
            created: 1,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: 0,
            explicit_writes: None,
            completion_tokens: r.completion_tokens(12),
            choices: r.choices,
            shape: r.shape,
        }
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
            cached_tokens: 0,
            explicit_writes: None,
            completion_tokens: n,
            choices: 1,
            shape: Shape::Chat,
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
            br#"{"model":"m","messages":[{}],"n":0}"#,
            br#"{"model":"m","messages":[{}],"n":"2"}"#,
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

    #[test]
    fn answers_n_choices_and_counts_them_all() {
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3,"max_tokens":4}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert_eq!(r.choices, 3);
        let c = Completion {
            choices: r.choices,
            ..completion(r.completion_tokens(12))
        };
        let body: Value = serde_json::from_str(&c.to_json()).unwrap();
        let choices = body["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        for (i, choice) in choices.iter().enumerate() {
            assert_eq!(choice["index"], i);
            assert_eq!(choice["message"]["content"], "Simulated answer from the");
        }
        assert_eq!(body["usage"]["completion_tokens"], 12);
        let mut streamed = vec![String::new(); 3];
        for event in c.role_events().iter().chain(&c.content_events()) {
            let v: Value = serde_json::from_str(event["data: ".len()..].trim_end()).unwrap();
            let choice = &v["choices"][0];
            let i = choice["index"].as_u64().unwrap() as usize;
            streamed[i].push_str(choice["delta"]["content"].as_str().unwrap());
        }
        assert!(streamed.iter().all(|s| s == "Simulated answer from the"));
        let closing = c.closing_events(true);
        assert_eq!(closing.len(), 3 + 2, "a finish per choice, usage, [DONE]");
        assert!(closing[3].contains(r#""completion_tokens":12"#));
    }

    #[test]
    fn answers_embeddings_one_vector_an_input() {
        let body = br#"{"model":"e","input":["abcdefgh","x",[1,2,3]],"dimensions":4}"#;
        let r = ChatRequest::parse_embeddings(body).unwrap();
        let shape = Shape::Embeddings {
            inputs: 3,
            dimensions: 4,
        };
        assert_eq!((r.prompt_tokens, r.shape), (2 + 1 + 3, shape));
        assert_eq!(r.completion_tokens(12), 0);
        let c = Completion {
            shape: r.shape,
            ..completion(0)
        };
        let body: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 3);
        assert_eq!(body["data"][2]["index"], 2);
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(body["usage"]["prompt_tokens"], 9);
        let single = ChatRequest::parse_embeddings(br#"{"model":"e","input":[5,6]}"#).unwrap();
        let one = Shape::Embeddings {
            inputs: 1,
            dimensions: 8,
        };
        assert_eq!(single.shape, one);
        for bad in [
            &br#"{"model":"e"}"#[..],
            br#"{"model":"e","input":[]}"#,
            br#"{"input":"x"}"#,
        ] {
            assert!(ChatRequest::parse_embeddings(bad).is_err());
        }
    }
}
