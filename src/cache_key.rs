//! A conversation's cache key: what keeps its requests on one account, where the upstream's
//! prompt cache of its opening lives (DashScope's caches are per account and model, so a
//! conversation spread over N accounts finds its prefix cached about one time in N).
//!
//! The key is the client's `prompt_cache_key` if it sent one (OpenAI's field for this), else
//! a hash of the conversation's opening: a chat's messages up to its first user message, a
//! Responses call's `instructions` and first input item, a text completion's first prompt.
//! Every later turn of the conversation starts the same way, so it gets the same key; two
//! conversations differ by their first question. Only the first `PART_BYTES` of each message
//! are read, so a long document costs no more than a short one, and an agent's long system
//! prompt does not hide its conversations' first questions.

use crate::openai::{ApiRequest, Endpoint};
use serde_json::Value;
use std::collections::HashMap;

/// How much of each part of the opening (a message, the instructions) is hashed: its text
/// (strings, keys, numbers) up to this many bytes.
const PART_BYTES: usize = 4 << 10;

/// The request's cache key, or None for a request with no conversation to keep together
/// (embeddings).
pub fn of(request: &ApiRequest) -> Option<u64> {
    let body = &request.body;
    if let Some(key) = body.get("prompt_cache_key").and_then(Value::as_str) {
        return Some(fnv(b"prompt_cache_key\0").hash(key.as_bytes()).0);
    }
    let opening: Vec<&Value> = match request.endpoint {
        Endpoint::Chat => {
            let messages = body.get("messages")?.as_array()?;
            let first_user = messages
                .iter()
                .position(|m| m.get("role").and_then(Value::as_str) == Some("user"));
            messages
                .iter()
                .take(first_user.map_or(1, |i| i + 1))
                .collect()
        }
        Endpoint::Responses => {
            let input = match body.get("input")? {
                Value::Array(items) => items.first()?,
                text => text,
            };
            vec![body.get("instructions").unwrap_or(&Value::Null), input]
        }
        Endpoint::Completions => match body.get("prompt")? {
            Value::Array(prompts) if !prompts.iter().all(Value::is_u64) => vec![prompts.first()?],
            prompt => vec![prompt],
        },
        Endpoint::Embeddings => return None,
    };
    let mut key = fnv(b"opening\0");
    for part in opening {
        let mut hash = Capped::default();
        hash.value(part);
        key = key.hash(&hash.fnv.0.to_le_bytes());
    }
    Some(key.0)
}

/// The requests in flight in one isolate, by cache key. A conversation is sequential: each
/// turn waits for the last one's answer. So a request whose key is already in flight is not
/// a turn of it but another use of the same opening (a template, a few-shot prompt, a load
/// test), and is spread at random rather than piled on one account.
#[derive(Debug, Default)]
pub struct InFlight(HashMap<u64, u32>);

impl InFlight {
    /// Counts a request with `key` in flight: the key to order its accounts by, None when
    /// another request with it is in flight.
    pub fn begin(&mut self, key: u64) -> Option<u64> {
        let n = self.0.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        (*n == 1).then_some(key)
    }

    /// The request with `key` has ended.
    pub fn end(&mut self, key: u64) {
        if let Some(n) = self.0.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }
}

/// FNV-1a, 64 bits: the same key in every isolate and every version.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Fnv {
    /// Adds `bytes` to the hash.
    pub fn hash(mut self, bytes: &[u8]) -> Fnv {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

/// The FNV-1a hash of `bytes`.
pub fn fnv(bytes: &[u8]) -> Fnv {
    Fnv(0xcbf2_9ce4_8422_2325).hash(bytes)
}

/// The hash of a JSON value's first `PART_BYTES` (each string, key and number after a tag
/// of its kind, so `["ab"]` and `["a","b"]` differ; objects in their keys' order).
struct Capped {
    fnv: Fnv,
    room: usize,
}

impl Default for Capped {
    fn default() -> Capped {
        Capped {
            fnv: fnv(b""),
            room: PART_BYTES,
        }
    }
}

impl Capped {
    fn bytes(&mut self, tag: u8, bytes: &[u8]) {
        if self.room == 0 {
            return;
        }
        let take = bytes.len().min(self.room);
        self.fnv = self
            .fnv
            .hash(&[tag])
            .hash(bytes.get(..take).unwrap_or_default());
        self.room -= take;
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.bytes(b'n', b""),
            Value::Bool(b) => self.bytes(b'b', &[u8::from(*b)]),
            Value::Number(n) => self.bytes(b'#', n.to_string().as_bytes()),
            Value::String(s) => self.bytes(b's', s.as_bytes()),
            Value::Array(items) => {
                self.bytes(b'[', b"");
                items.iter().for_each(|v| self.value(v));
                self.bytes(b']', b"");
            }
            Value::Object(map) => {
                self.bytes(b'{', b"");
                for (k, v) in map {
                    self.bytes(b'k', k.as_bytes());
                    self.value(v);
                }
                self.bytes(b'}', b"");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(endpoint: Endpoint, body: Value) -> Option<u64> {
        let bytes = body.to_string();
        of(&ApiRequest::parse(bytes.as_bytes(), endpoint, 1000).unwrap())
    }

    fn chat(messages: Value) -> Option<u64> {
        key(Endpoint::Chat, json!({"model": "m", "messages": messages}))
    }

    #[test]
    fn every_turn_of_a_conversation_has_its_key_and_another_conversation_another() {
        let system = json!({"role": "system", "content": "You are a coding agent."});
        let first = json!({"role": "user", "content": "Fix the build."});
        let turn1 = chat(json!([system, first]));
        let turn3 = chat(json!([system, first,
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "sh", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "error: E0308"},
            {"role": "user", "content": "Go on."}]));
        assert!(turn1.is_some());
        assert_eq!(turn1, turn3);
        // Other settings of the turn do not move it.
        let streamed = key(
            Endpoint::Chat,
            json!({"model": "m", "stream": true, "temperature": 0.2, "messages": [system, first]}),
        );
        assert_eq!(turn1, streamed);
        let other = chat(json!([system, {"role": "user", "content": "Write the docs."}]));
        assert_ne!(turn1, other);
        let other_system = chat(json!([{"role": "system", "content": "Be brief."}, first]));
        assert_ne!(turn1, other_system);
    }

    #[test]
    fn the_clients_own_key_wins() {
        let a = key(
            Endpoint::Chat,
            json!({"model": "m", "prompt_cache_key": "user-42", "messages": [{"role": "user", "content": "a"}]}),
        );
        let b = key(
            Endpoint::Responses,
            json!({"model": "m", "prompt_cache_key": "user-42", "input": "b"}),
        );
        assert_eq!(a, b);
        assert_ne!(a, chat(json!([{"role": "user", "content": "a"}])));
    }

    #[test]
    fn responses_and_text_completion_open_with_their_first_input() {
        let r = |input: Value| {
            key(
                Endpoint::Responses,
                json!({"model": "m", "instructions": "Be kind.", "input": input}),
            )
        };
        let opening = json!({"role": "user", "content": "Hi"});
        assert_eq!(
            r(json!([opening])),
            r(
                json!([opening, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "More"}])
            )
        );
        assert_ne!(r(json!("Hi")), r(json!("Bye")));
        let c = |prompt: Value| {
            key(
                Endpoint::Completions,
                json!({"model": "m", "prompt": prompt}),
            )
        };
        assert_eq!(c(json!(["fn main", "other"])), c(json!(["fn main"])));
        assert_ne!(c(json!("fn main")), c(json!("fn other")));
        assert_eq!(c(json!([1, 2, 3])), c(json!([1, 2, 3])));
        assert_eq!(
            key(Endpoint::Embeddings, json!({"model": "m", "input": "x"})),
            None
        );
    }

    #[test]
    fn a_key_in_flight_is_not_a_turn_of_its_conversation() {
        let mut in_flight = InFlight::default();
        assert_eq!(in_flight.begin(7), Some(7), "the first: a turn");
        assert_eq!(in_flight.begin(7), None, "concurrent: spread at random");
        assert_eq!(in_flight.begin(8), Some(8), "another conversation");
        in_flight.end(7);
        assert_eq!(in_flight.begin(7), None, "one still in flight");
        in_flight.end(7);
        in_flight.end(7);
        assert_eq!(in_flight.begin(7), Some(7), "the next turn");
        in_flight.end(7);
        in_flight.end(8);
        in_flight.end(9);
        assert!(in_flight.0.is_empty(), "nothing kept once ended");
    }

    #[test]
    fn each_message_is_read_only_to_the_cap() {
        let long = "x".repeat(PART_BYTES * 4);
        let a = chat(json!([{"role": "user", "content": format!("{long}a")}]));
        let b = chat(json!([{"role": "user", "content": format!("{long}b")}]));
        assert!(a.is_some());
        assert_eq!(a, b, "past the cap: the same key");
        // An agent's system prompt longer than the cap: its conversations still differ.
        let system = json!({"role": "system", "content": long});
        let task = |t: &str| chat(json!([system, {"role": "user", "content": t}]));
        assert_ne!(task("Fix the build."), task("Write the docs."));
        let mut capped = Capped::default();
        capped.value(&json!("y".repeat(PART_BYTES + 5)));
        assert_eq!(capped.room, 0);
        let full = capped.fnv.0;
        capped.value(&json!("more"));
        assert_eq!(capped.fnv.0, full, "nothing hashed past the cap");
        let shape = |v: Value| {
            let mut c = Capped::default();
            c.value(&v);
            c.fnv.0
        };
        assert_ne!(shape(json!(["ab"])), shape(json!(["a", "b"])));
        assert_ne!(shape(json!({"a": "b"})), shape(json!({"ab": ""})));
    }
}
