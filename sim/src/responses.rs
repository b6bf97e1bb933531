//! The Responses API (`POST .../responses`): its request read into a `ChatRequest`, and its
//! answer as one `response` object or as the stream of typed events OpenAI sends.

use serde_json::{json, Value};

use crate::completion::{object_with_model, prompt_tokens, ChatRequest, Completion, Shape};

impl ChatRequest {
    /// Parses a Responses body: `input` a string (one user message) or an array of items,
    /// counted as chat messages are, plus `instructions` as one more; `max_output_tokens`
    /// caps the answer.
    pub fn parse_responses(body: &[u8]) -> Result<ChatRequest, String> {
        let (v, model) = object_with_model(body)?;
        let items = match &v["input"] {
            Value::String(text) => vec![json!({"role": "user", "content": text})],
            Value::Array(items) => items.clone(),
            Value::Null => return Err("Missing required parameter: 'input'.".into()),
            _ => return Err("Invalid type for 'input': expected a string or an array.".into()),
        };
        let instructions = match &v["instructions"] {
            Value::String(text) => vec![json!({"role": "system", "content": text})],
            Value::Null => vec![],
            _ => return Err("Invalid type for 'instructions': expected a string.".into()),
        };
        let stream = match &v["stream"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err("Invalid type for 'stream': expected a boolean.".into()),
        };
        let messages: Vec<Value> = instructions.iter().chain(&items).cloned().collect();
        Ok(ChatRequest {
            model,
            prompt_tokens: prompt_tokens(&messages),
            max_tokens: v["max_output_tokens"].as_u64(),
            stream,
            include_usage: false,
            choices: 1,
            shape: Shape::Response,
            previous_response_id: v["previous_response_id"].as_str().map(str::to_string),
            input: items,
            prefixes: Vec::new(),
            marked: None,
        })
    }
}

/// Events before the first word: the response created and in progress, its message and
/// text part opened.
const OPENING_EVENTS: u64 = 4;

impl Completion {
    fn response_id(&self) -> String {
        format!("resp_{}", self.request_id())
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.request_id())
    }

    fn response_usage(&self) -> Value {
        let output = self.total_completion_tokens();
        let mut usage = json!({
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt_tokens + output,
        });
        // DashScope's session cache: the explicit cache's details, in `x_details`.
        if let Some(written) = self.explicit_writes {
            usage["x_details"] = json!([{
                "input_tokens": self.prompt_tokens,
                "output_tokens": output,
                "prompt_tokens_details": self.explicit_details(written),
                "total_tokens": self.prompt_tokens + output,
                "x_billing_type": "response_api",
            }]);
        }
        usage
    }

    fn message(&self, status: &str, text: Option<&str>) -> Value {
        let content = match text {
            Some(text) => json!([{"type": "output_text", "text": text, "annotations": []}]),
            None => json!([]),
        };
        json!({"id": self.message_id(), "type": "message", "status": status,
               "role": "assistant", "content": content})
    }

    /// The `response` object: in progress (no output yet, no usage) or completed.
    fn response(&self, completed: bool) -> Value {
        let (status, output, usage) = if completed {
            let message = self.message("completed", Some(&self.content()));
            ("completed", json!([message]), self.response_usage())
        } else {
            ("in_progress", json!([]), Value::Null)
        };
        json!({
            "id": self.response_id(), "object": "response", "created_at": self.created,
            "status": status, "error": null, "incomplete_details": null,
            "model": self.model, "output": output, "usage": usage,
        })
    }

    /// The non-streamed answer.
    pub fn response_json(&self) -> String {
        self.response(true).to_string()
    }

    /// One event, its type named as `event:` and in the data, as OpenAI sends them.
    fn typed_event(&self, sequence: u64, mut data: Value) -> String {
        data["sequence_number"] = json!(sequence);
        let kind = data["type"].as_str().unwrap_or_default().to_string();
        format!("event: {kind}\ndata: {data}\n\n")
    }

    fn part(&self, kind: &str, text: &str) -> Value {
        json!({"type": kind, "item_id": self.message_id(), "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": text, "annotations": []}})
    }

    /// Created, in progress, the message and its text part added.
    pub fn response_opening_events(&self) -> Vec<String> {
        let in_progress = self.response(false);
        [
            json!({"type": "response.created", "response": in_progress}),
            json!({"type": "response.in_progress", "response": in_progress}),
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": self.message("in_progress", None)}),
            self.part("response.content_part.added", ""),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, event)| self.typed_event(i as u64, event))
        .collect()
    }

    /// One `response.output_text.delta` per word.
    pub fn response_delta_events(&self, texts: Vec<String>) -> Vec<String> {
        texts
            .into_iter()
            .enumerate()
            .map(|(i, delta)| {
                let event = json!({"type": "response.output_text.delta", "item_id": self.message_id(),
                    "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []});
                self.typed_event(OPENING_EVENTS + i as u64, event)
            })
            .collect()
    }

    /// The text, part and message done, then `response.completed` with the usage.
    pub fn response_closing_events(&self) -> Vec<String> {
        let text = self.content();
        let mut text_done = self.part("response.output_text.done", &text);
        text_done["text"] = json!(text);
        [
            text_done,
            self.part("response.content_part.done", &text),
            json!({"type": "response.output_item.done", "output_index": 0,
                   "item": self.message("completed", Some(&text))}),
            json!({"type": "response.completed", "response": self.response(true)}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            self.typed_event(OPENING_EVENTS + self.completion_tokens + i as u64, event)
        })
        .collect()
    }

    /// A mid-stream failure: OpenAI's `error` event (`shape_failed` false), or
    /// `response.failed` with the error inside the response.
    pub fn response_error_event(&self, failed: bool, code: &str, message: &str) -> String {
        let error = json!({"code": code, "message": message});
        let event = if failed {
            let mut response = self.response(false);
            response["status"] = json!("failed");
            response["error"] = error;
            json!({"type": "response.failed", "response": response})
        } else {
            json!({"type": "error", "code": code, "message": message, "param": null})
        };
        self.typed_event(OPENING_EVENTS + self.completion_tokens + 1, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(event: &str) -> Value {
        let line = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn reads_a_string_or_items_and_the_instructions() {
        let r = ChatRequest::parse_responses(
            br#"{"model":"m","input":"hello","instructions":"abcd","max_output_tokens":5}"#,
        )
        .unwrap();
        // (4 + 1) + (4 + 2) + 3, as the same chat would count.
        assert_eq!(r.prompt_tokens, 14);
        assert_eq!((r.completion_tokens(12), r.stream), (5, false));
        let items = ChatRequest::parse_responses(
            br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hello"}]}],"stream":true}"#,
        )
        .unwrap();
        assert_eq!((items.prompt_tokens, items.stream), (4 + 2 + 3, true));
        for bad in [
            &br#"{"model":"m"}"#[..],
            br#"{"model":"m","input":3}"#,
            br#"{"model":"m","input":"x","stream":"yes"}"#,
            br#"{"input":"x"}"#,
        ] {
            assert!(ChatRequest::parse_responses(bad).is_err());
        }
    }

    #[test]
    fn the_stream_adds_up_to_the_body() {
        let r =
            ChatRequest::parse_responses(br#"{"model":"m","input":"hi","max_output_tokens":4}"#)
                .unwrap();
        let c = Completion::answering(&r);
        let body: Value = serde_json::from_str(&c.response_json()).unwrap();
        assert_eq!(body["object"], "response");
        assert_eq!(body["id"], "resp_7");
        let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, "Simulated answer from the");
        assert_eq!(body["usage"]["output_tokens"], 4);
        let events: Vec<String> = c
            .response_opening_events()
            .into_iter()
            .chain(c.response_delta_events(c.content_pieces()))
            .chain(c.response_closing_events())
            .collect();
        let datas: Vec<Value> = events.iter().map(|e| data(e)).collect();
        for (i, (event, data)) in events.iter().zip(&datas).enumerate() {
            assert_eq!(data["sequence_number"], i, "{event}");
            assert!(event.starts_with(&format!("event: {}\n", data["type"].as_str().unwrap())));
        }
        let streamed: String = datas
            .iter()
            .filter(|d| d["type"] == "response.output_text.delta")
            .map(|d| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(streamed, text);
        let last = datas.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"], body);
        let failed = data(&c.response_error_event(true, "server_error", "broke"));
        assert_eq!(failed["response"]["error"]["code"], "server_error");
        let error = data(&c.response_error_event(false, "rate_limit_exceeded", "slow down"));
        assert_eq!(
            (&error["type"], &error["code"]),
            (&json!("error"), &json!("rate_limit_exceeded"))
        );
    }
}
