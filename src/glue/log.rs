//! Structured logs: one JSON line per event on `console.log`, read by `wrangler tail` and
//! Workers Logs. Callers pass ids, names and outcomes only: never a key, a token or prompt text.

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
    worker::console_log!("{}", Value::Object(out));
}

/// Something failed that the gateway worked around or could not do (a settle, a park, a write).
pub fn warn(event: &str, request_id: &str, fields: Value) {
    line("warn", event, request_id, fields);
}

/// Something worth knowing happened (a client left, a stream outlived its deadline).
pub fn info(event: &str, request_id: &str, fields: Value) {
    line("info", event, request_id, fields);
}
