//! Structured logs: one JSON line per event on `console.log`, read by `wrangler tail` and
//! Workers Logs. Callers pass ids, names and outcomes only: never a key, a token or prompt text.

use crate::openai::{Endpoint, Usage};
use serde::Serialize;
use serde_json::{Map, Value};

/// Logs `event` for request `request_id` with `fields` (a JSON object) at `level`.
fn line(level: &str, event: &str, request_id: &str, fields: Value) {
    let mut out = Map::new();
    out.insert("level".into(), level.into());
    out.insert("event".into(), event.into());
    if !request_id.is_empty() {
        out.insert("request_id".into(), request_id.into());
    }
    if let Value::Object(fields) = fields {
        out.extend(fields);
    }
    print(&Value::Object(out));
}

/// Writes one line: serialised straight to a string (no `format!` pass).
fn print<T: Serialize>(line: &T) {
    if let Ok(text) = serde_json::to_string(line) {
        worker::web_sys::console::log_1(&text.into());
    }
}

/// Something failed that the gateway worked around or could not do (a settle, a park, a write).
pub fn warn(event: &str, request_id: &str, fields: Value) {
    line("warn", event, request_id, fields);
}

/// Something worth knowing happened (a client left, a stream outlived its deadline).
pub fn info(event: &str, request_id: &str, fields: Value) {
    line("info", event, request_id, fields);
}

/// What one request did, logged as one line when it ends (`request` event): who asked for
/// what, each attempt's bucket and outcome, the time it waited for slots, and at the end
/// its status, latency, tokens and cost.
#[derive(Debug, Default)]
pub struct Trail {
    client: String,
    user: Option<String>,
    endpoint: Option<&'static str>,
    requested: String,
    attempts: Vec<Attempt>,
    wait_ms: u64,
    started_ms: u64,
}

/// One attempt in a `request` line.
#[derive(Debug, Serialize)]
struct Attempt {
    bucket: String,
    outcome: &'static str,
}

/// The `request` line, typed: serialised with no intermediate `Value`s, on every request.
#[derive(Serialize)]
struct RequestLine<'a> {
    level: &'a str,
    event: &'a str,
    request_id: &'a str,
    client: &'a str,
    user: Option<&'a str>,
    endpoint: Option<&'a str>,
    requested_model: &'a str,
    served_model: Option<&'a str>,
    attempts: &'a [Attempt],
    wait_ms: u64,
    status: u16,
    latency_ms: u64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// Of the prompt, what the upstream read from its prompt cache.
    cached_tokens: Option<u64>,
    cost_usd: Option<f64>,
}

/// How a request ended, for its `request` line.
pub struct Ending<'a> {
    /// HTTP status answered.
    pub status: u16,
    /// The upstream model that answered, if any.
    pub served: Option<&'a str>,
    /// The tokens the upstream reported.
    pub usage: Option<Usage>,
    /// What it cost, if priced.
    pub cost_usd: Option<f64>,
    /// When it ended.
    pub now_ms: u64,
}

impl Trail {
    /// A request by `client` (and `user`) that started at `started_ms`.
    pub fn new(client: &str, user: Option<&str>, started_ms: u64) -> Trail {
        Trail {
            client: client.to_string(),
            user: user.map(str::to_string),
            started_ms,
            ..Trail::default()
        }
    }

    /// The endpoint called (its path under `/v1/`) and the public model asked for.
    pub fn requested(&mut self, endpoint: Endpoint, model: &str) {
        self.endpoint = Some(endpoint.path());
        self.requested = model.to_string();
    }

    /// One attempt at `bucket` and how it went.
    pub fn attempt(&mut self, bucket: &str, outcome: &'static str) {
        self.attempts.push(Attempt {
            bucket: bucket.to_string(),
            outcome,
        });
    }

    /// Time spent waiting for a scheduled slot.
    pub fn waited(&mut self, ms: u64) {
        self.wait_ms = self.wait_ms.saturating_add(ms);
    }

    /// The time waited so far.
    pub fn wait_ms(&self) -> u64 {
        self.wait_ms
    }

    /// Logs the request's one line.
    pub fn end(&self, request_id: &str, ending: Ending) {
        let usage = ending.usage;
        print(&RequestLine {
            level: "info",
            event: "request",
            request_id,
            client: &self.client,
            user: self.user.as_deref(),
            endpoint: self.endpoint,
            requested_model: &self.requested,
            served_model: ending.served,
            attempts: &self.attempts,
            wait_ms: self.wait_ms,
            status: ending.status,
            latency_ms: ending.now_ms.saturating_sub(self.started_ms),
            prompt_tokens: usage.and_then(|u| u.prompt_tokens),
            completion_tokens: usage.and_then(|u| u.completion_tokens),
            cached_tokens: usage.map(|u| u.cached_tokens),
            cost_usd: ending.cost_usd,
        });
    }
}
