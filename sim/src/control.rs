//! The `/_sim/` control endpoint used by tests: health, stats, reset, accounts, faults, time
//! scale, and a receiver standing in for the operator's alert webhook (`hooks`).

use std::sync::{Arc, Mutex};

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::SimBody;
use crate::faults::Fault;
use crate::respond::plain_json;
use crate::state::{lock, SimState};

fn ok() -> Response<SimBody> {
    plain_json(StatusCode::OK, json!({"ok": true}).to_string())
}

fn fail(status: StatusCode, error: &str) -> Response<SimBody> {
    plain_json(status, json!({"ok": false, "error": error}).to_string())
}

fn parse(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

/// Queues faults from a JSON object or array.
pub fn push_faults(state: &Mutex<SimState>, v: &Value) -> Result<usize, String> {
    let faults = Fault::list_from_json(v)?;
    let n = faults.len();
    lock(state).faults.push(faults);
    Ok(n)
}

/// Serves `/_sim/<rest>`; `rest` has no leading slash.
pub fn control(
    state: &Arc<Mutex<SimState>>,
    method: &Method,
    rest: &str,
    body: &[u8],
) -> Response<SimBody> {
    match (method, rest) {
        (&Method::GET, "health") => ok(),
        (&Method::GET, "stats") => {
            let stats = lock(state).stats_json();
            plain_json(StatusCode::OK, stats.to_string())
        }
        (&Method::POST, "reset") => {
            lock(state).reset();
            ok()
        }
        (&Method::GET, "faults") => {
            let list = lock(state).faults.to_json();
            plain_json(StatusCode::OK, list.to_string())
        }
        (&Method::POST, "faults") => match parse(body) {
            Ok(v) => match push_faults(state, &v) {
                Ok(n) => plain_json(StatusCode::OK, json!({"ok": true, "queued": n}).to_string()),
                Err(e) => fail(StatusCode::BAD_REQUEST, &e),
            },
            Err(e) => fail(StatusCode::BAD_REQUEST, &e),
        },
        (&Method::DELETE, "faults") => {
            lock(state).faults.clear();
            ok()
        }
        (&Method::POST, "time_scale") => {
            let v = match parse(body) {
                Ok(v) => v,
                Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
            };
            let Some(scale) = v["time_scale"].as_f64() else {
                return fail(StatusCode::BAD_REQUEST, "expected {\"time_scale\": number}");
            };
            match lock(state).set_time_scale(scale) {
                Ok(()) => ok(),
                Err(e) => fail(StatusCode::BAD_REQUEST, &e),
            }
        }
        (&Method::GET, "hooks") => {
            let hooks = Value::Array(lock(state).hooks.clone());
            plain_json(StatusCode::OK, hooks.to_string())
        }
        (&Method::POST, "hook_status") => {
            let status = parse(body).ok().and_then(|v| v["status"].as_u64());
            match status.and_then(|s| StatusCode::from_u16(s as u16).ok()) {
                Some(status) => {
                    lock(state).hook_status = status.as_u16();
                    ok()
                }
                None => fail(
                    StatusCode::BAD_REQUEST,
                    "expected {\"status\": an HTTP status}",
                ),
            }
        }
        (&Method::POST, rest) if rest.starts_with("hooks/") => {
            let body = serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
            let mut s = lock(state);
            let name = &rest["hooks/".len()..];
            s.hooks.push(json!({"name": name, "body": body}));
            let status = StatusCode::from_u16(s.hook_status).unwrap_or(StatusCode::OK);
            plain_json(status, json!({"ok": status.is_success()}).to_string())
        }
        (&Method::POST, rest) if rest.starts_with("accounts/") => {
            let id = &rest["accounts/".len()..];
            let v = match parse(body) {
                Ok(v) => v,
                Err(e) => return fail(StatusCode::BAD_REQUEST, &e),
            };
            let mut s = lock(state);
            if !s.has_account(id) {
                return fail(StatusCode::NOT_FOUND, &format!("unknown account {id}"));
            }
            match s.update_account(id, &v) {
                Ok(()) => ok(),
                Err(e) => fail(StatusCode::BAD_REQUEST, &e),
            }
        }
        (_, "health" | "stats" | "reset" | "faults" | "time_scale" | "hooks" | "hook_status") => {
            fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => fail(
            StatusCode::NOT_FOUND,
            &format!("unknown control path /_sim/{rest}"),
        ),
    }
}
