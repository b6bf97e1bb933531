//! Text completion (`POST .../completions`, DashScope's Completions API for its Qwen Coder
//! models): its request read into a `ChatRequest`, its answer as one `text_completion`
//! object or as the chunks OpenAI streams.

use serde_json::{json, Value};

use crate::completion::{object_with_model, ChatRequest, Completion, Shape};

impl ChatRequest {
    /// Parses a text completion body: `prompt` a string, or an array of strings, of token ids
    /// or of arrays of token ids (ceil(chars / 4) tokens a text, one a token id; `suffix`
    /// counted as text). Each prompt is answered with `n` choices, and `best_of` candidates
    /// of each are generated and counted.
    pub fn parse_completions(body: &[u8]) -> Result<ChatRequest, String> {
        let (v, model) = object_with_model(body)?;
        let prompt = &v["prompt"];
        let prompts: Vec<&Value> = match prompt {
            Value::String(_) => vec![prompt],
            Value::Array(items) if items.is_empty() => {
                return Err("Invalid value for 'prompt': must not be empty.".into())
            }
            Value::Array(items) if items.iter().all(Value::is_u64) => vec![prompt],
            Value::Array(items) => items.iter().collect(),
            Value::Null => return Err("Missing required parameter: 'prompt'.".into()),
            _ => return Err("Invalid type for 'prompt': expected a string or an array.".into()),
        };
        let text = |s: &str| (s.chars().count() as u64).div_ceil(4);
        let tokens = prompts.iter().map(|p| match p {
            Value::String(s) => Ok(text(s)),
            Value::Array(ids) if ids.iter().all(Value::is_u64) => Ok(ids.len() as u64),
            _ => Err("Invalid value for 'prompt': mixed types.".to_string()),
        });
        let prompt_tokens =
            tokens.sum::<Result<u64, String>>()? + v["suffix"].as_str().map_or(0, text);
        let positive = |field: &str| match &v[field] {
            Value::Null => Ok(1),
            n => n.as_u64().filter(|n| *n >= 1).ok_or(format!(
                "Invalid value for '{field}': expected a positive integer."
            )),
        };
        let choices = positive("n")?;
        let candidates = positive("best_of")?.max(choices);
        let stream = match &v["stream"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err("Invalid type for 'stream': expected a boolean.".into()),
        };
        Ok(ChatRequest {
            model,
            prompt_tokens,
            max_tokens: v["max_tokens"].as_u64(),
            stream,
            include_usage: v["stream_options"]["include_usage"] == Value::Bool(true),
            choices: choices * prompts.len() as u64,
            shape: Shape::Text {
                generated: candidates * prompts.len() as u64,
            },
            previous_response_id: None,
            input: Vec::new(),
            prefixes: Vec::new(),
            marked: None,
        })
    }
}

impl Completion {
    fn text_id(&self) -> String {
        format!("cmpl-{}", self.request_id())
    }

    /// The whole `text_completion` body: every choice the same text.
    pub(crate) fn text_json(&self) -> String {
        let choices: Vec<Value> = (0..self.choices)
            .map(|i| json!({"text": self.content(), "index": i, "logprobs": null, "finish_reason": "stop"}))
            .collect();
        let answer = json!({
            "id": self.text_id(), "object": "text_completion", "created": self.created,
            "model": self.model, "choices": choices, "usage": self.usage_json(),
        });
        answer.to_string()
    }

    /// One chunk: `choices` and, when given, the usage.
    fn text_event(&self, choices: Value, usage: Option<Value>) -> String {
        let mut chunk = json!({
            "id": self.text_id(), "object": "text_completion", "created": self.created,
            "model": self.model, "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        format!("data: {chunk}\n\n")
    }

    /// One chunk per word and choice, as OpenAI interleaves choices; each choice's texts
    /// concatenate to [`Completion::content`].
    pub(crate) fn text_content_events(&self) -> Vec<String> {
        let pieces = self.content_pieces();
        let choice = |i: u64, text: &str| json!([{"text": text, "index": i, "logprobs": null, "finish_reason": null}]);
        pieces
            .iter()
            .flat_map(|text| (0..self.choices).map(move |i| (i, text)))
            .map(|(i, text)| self.text_event(choice(i, text), None))
            .collect()
    }

    /// The finishing chunk of each choice, the usage when asked for, `[DONE]`.
    pub(crate) fn text_closing_events(&self, include_usage: bool) -> Vec<String> {
        let finish =
            |i: u64| json!([{"text": "", "index": i, "logprobs": null, "finish_reason": "stop"}]);
        let mut events: Vec<String> = (0..self.choices)
            .map(|i| self.text_event(finish(i), None))
            .collect();
        if include_usage {
            events.push(self.text_event(json!([]), Some(self.usage_json())));
        }
        events.push("data: [DONE]\n\n".to_string());
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(event: &str) -> Value {
        serde_json::from_str(event.strip_prefix("data: ").unwrap().trim_end()).unwrap()
    }

    #[test]
    fn reads_prompts_and_counts_every_prompt_choice_and_candidate() {
        let body = br#"{"model":"c","prompt":["abcd","abcde"],"suffix":"xy","max_tokens":3,"n":2,"best_of":3}"#;
        let r = ChatRequest::parse_completions(body).unwrap();
        assert_eq!((r.prompt_tokens, r.choices), (1 + 2 + 1, 4));
        assert_eq!(r.shape, Shape::Text { generated: 6 });
        let c = Completion::answering(&r);
        // Three candidates of three tokens for each of two prompts.
        assert_eq!(c.total_completion_tokens(), 18);
        let body: Value = serde_json::from_str(&c.text_json()).unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"].as_array().unwrap().len(), 4);
        assert_eq!(body["usage"]["completion_tokens"], 18);
        let ids = ChatRequest::parse_completions(br#"{"model":"c","prompt":[1,2,3]}"#).unwrap();
        assert_eq!((ids.prompt_tokens, ids.choices), (3, 1));
        for bad in [
            &br#"{"model":"c"}"#[..],
            br#"{"model":"c","prompt":[]}"#,
            br#"{"model":"c","prompt":{"a":1}}"#,
            br#"{"model":"c","prompt":["a",1]}"#,
            br#"{"model":"c","prompt":"a","best_of":0}"#,
            br#"{"model":"c","prompt":"a","stream":1}"#,
        ] {
            assert!(ChatRequest::parse_completions(bad).is_err());
        }
    }

    #[test]
    fn streams_each_choice_the_whole_text_then_usage_and_done() {
        let body = br#"{"model":"c","prompt":"def f(","n":2,"max_tokens":5,"stream":true}"#;
        let c = Completion::answering(&ChatRequest::parse_completions(body).unwrap());
        let mut texts = [String::new(), String::new()];
        for event in c.text_content_events() {
            let chunk = data(&event);
            let index = chunk["choices"][0]["index"].as_u64().unwrap() as usize;
            texts[index] += chunk["choices"][0]["text"].as_str().unwrap();
        }
        assert_eq!(texts, [c.content(), c.content()]);
        let closing = c.text_closing_events(true);
        assert_eq!(closing.len(), 4);
        assert_eq!(data(&closing[2])["usage"]["completion_tokens"], 10);
        assert_eq!(closing[3], "data: [DONE]\n\n");
        assert_eq!(c.text_closing_events(false).len(), 3);
    }
}
