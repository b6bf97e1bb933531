//! An upstream error body's fields, in every dialect the gateway meets, and what of its
//! message may be shown to a client.

use crate::hints::{parse_go_duration_ms, MAX_HINT_MS};
use serde_json::{Map, Value};

/// The fields of an upstream error body, in either DashScope shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamError {
    /// `error.code` (compatible mode) or `code` (native).
    pub code: Option<String>,
    /// `error.type`, when present.
    pub kind: Option<String>,
    /// `error.message` or `message`.
    pub message: Option<String>,
    /// `error.param`, when a string.
    pub param: Option<String>,
}

impl UpstreamError {
    /// Parses `{"error":{...}}` (also wrapped in a one-element array, as Gemini's compatible
    /// endpoint sends it), `{"error":"text"}`, or the native flat `{"code","message"}`;
    /// anything else is empty.
    pub fn parse(body: &[u8]) -> UpstreamError {
        Self::from_fields(&error_fields(body))
    }

    fn from_fields(fields: &Map<String, Value>) -> UpstreamError {
        let text = |k: &str| match fields.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        UpstreamError {
            code: text("code"),
            kind: text("type"),
            message: text("message"),
            param: text("param"),
        }
    }
}

/// The object holding an error's fields, or an empty map.
fn error_fields(body: &[u8]) -> Map<String, Value> {
    let root = match crate::json::from_bytes::<Value>(body) {
        Ok(Value::Array(items)) => items.into_iter().next(),
        Ok(v) => Some(v),
        Err(_) => None,
    };
    let Some(Value::Object(mut root)) = root else {
        return Map::new();
    };
    match root.remove("error") {
        Some(Value::Object(e)) => e,
        Some(Value::String(m)) => Map::from_iter([("message".to_string(), Value::String(m))]),
        Some(other) => {
            root.insert("error".to_string(), other);
            root
        }
        None => root,
    }
}

/// An error body as `classify` reads it.
pub(super) struct Parsed {
    pub(super) up: UpstreamError,
    /// Lowercased message, for text rules.
    pub(super) text: String,
    /// Google's `error.status`, e.g. `RESOURCE_EXHAUSTED`.
    pub(super) status: Option<String>,
    /// Google's `RetryInfo.retryDelay`.
    pub(super) retry_delay_ms: Option<u64>,
    /// Google's `QuotaFailure.violations[].quotaId`.
    pub(super) quota_ids: Vec<String>,
}

impl Parsed {
    pub(super) fn parse(body: &[u8]) -> Parsed {
        let fields = error_fields(body);
        let up = UpstreamError::from_fields(&fields);
        let (mut retry_delay_ms, mut quota_ids) = (None, Vec::new());
        for detail in fields
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(delay) = detail.get("retryDelay").and_then(Value::as_str) {
                retry_delay_ms = retry_delay_ms.or(parse_go_duration_ms(delay));
            }
            let violations = detail.get("violations").and_then(Value::as_array);
            for v in violations.into_iter().flatten() {
                if let Some(id) = v.get("quotaId").and_then(Value::as_str) {
                    quota_ids.push(id.to_string());
                }
            }
        }
        Parsed {
            text: up.message.as_deref().unwrap_or("").to_ascii_lowercase(),
            status: fields
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_string),
            retry_delay_ms: retry_delay_ms.map(|ms| ms.min(MAX_HINT_MS)),
            quota_ids,
            up,
        }
    }

    /// Whether `code` or `type` is one of `names`.
    pub(super) fn is(&self, names: &[&str]) -> bool {
        let field = |f: &Option<String>| {
            f.as_deref()
                .is_some_and(|v| names.iter().any(|n| v.eq_ignore_ascii_case(n)))
        };
        field(&self.up.code) || field(&self.up.kind)
    }

    /// Whether the message contains one of `needles` (lowercase), ignoring case.
    pub(super) fn says(&self, needles: &[&str]) -> bool {
        needles.iter().any(|n| self.text.contains(n))
    }

    /// The upstream's code (or type) naming what happened, else the status.
    pub(super) fn reason(&self, status: u16) -> String {
        let reason = self.up.code.as_ref().or(self.up.kind.as_ref());
        reason.cloned().unwrap_or_else(|| format!("http_{status}"))
    }
}
