//! Reads an upstream's error answer and decides what the client sees.

use crate::openai::ApiError;
use serde_json::Value;

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
    /// Parses `{"error":{...}}` or the native flat `{"code","message"}`; anything else is empty.
    pub fn parse(body: &[u8]) -> UpstreamError {
        let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(body) else {
            return UpstreamError::default();
        };
        let fields = match root.get("error") {
            Some(Value::Object(e)) => e,
            _ => &root,
        };
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

/// The error a client gets for a non-2xx upstream answer.
///
/// Client mistakes keep the upstream's status and fields; credential and server failures
/// become 502s that name the upstream id and never repeat the upstream's text about keys.
pub fn client_error(upstream_id: &str, status: u16, body: &[u8]) -> ApiError {
    let up = UpstreamError::parse(body);
    let code = up.code.as_deref();
    match status {
        400 | 404 | 409 | 413 | 422 => {
            let message = up
                .message
                .unwrap_or_else(|| format!("The upstream rejected the request ({status})."));
            let mut e = ApiError::new(
                status,
                up.kind.as_deref().unwrap_or("invalid_request_error"),
                code,
                message,
            );
            e.param = up.param;
            e.should_retry = Some(false);
            e
        }
        401 | 403 => ApiError::bad_gateway(
            "upstream_auth_failed",
            format!(
                "Upstream '{upstream_id}' refused the gateway's credentials ({status} {}).",
                code.unwrap_or("no code")
            ),
        ),
        429 => {
            let mut e = ApiError::new(
                429,
                "rate_limit_exceeded",
                code.or(Some("rate_limit_exceeded")),
                format!(
                    "Upstream '{upstream_id}' is rate limited: {}",
                    up.message.as_deref().unwrap_or("429 Too Many Requests")
                ),
            );
            e.retry_after_s = Some(60);
            e
        }
        _ => ApiError::bad_gateway(
            "upstream_error",
            format!(
                "Upstream '{upstream_id}' failed with {status} ({}): {}",
                code.unwrap_or("no code"),
                up.message.as_deref().unwrap_or("no message")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_dashscope_shapes() {
        let compat = UpstreamError::parse(
            br#"{"error":{"message":"m","type":"limit_requests","param":null,"code":"limit_requests"}}"#,
        );
        assert_eq!(compat.code.as_deref(), Some("limit_requests"));
        assert_eq!(compat.param, None);
        let native = UpstreamError::parse(
            br#"{"request_id":"r","code":"Throttling.RateQuota","message":"Requests rate limit exceeded"}"#,
        );
        assert_eq!(native.code.as_deref(), Some("Throttling.RateQuota"));
        assert_eq!(UpstreamError::parse(b"<html>"), UpstreamError::default());
    }

    #[test]
    fn maps_statuses_for_the_client() {
        let server = client_error(
            "sim",
            500,
            br#"{"error":{"message":"An internal error has occured","type":"InternalError","param":null,"code":"InternalError"}}"#,
        );
        assert_eq!(
            (server.status, server.kind.as_str()),
            (502, "upstream_error")
        );
        assert!(server.message.contains("'sim'") && server.message.contains("InternalError"));

        let moderation = client_error(
            "sim",
            400,
            br#"{"error":{"code":"data_inspection_failed","param":null,"message":"Input data may contain inappropriate content.","type":"data_inspection_failed"}}"#,
        );
        assert_eq!(moderation.status, 400);
        assert_eq!(moderation.code.as_deref(), Some("data_inspection_failed"));
        assert_eq!(moderation.should_retry, Some(false));

        let auth = client_error(
            "sim",
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-a1***.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(auth.status, 502);
        assert!(!auth.message.contains("sk-a1"), "{}", auth.message);

        let limited = client_error("sim", 429, b"");
        assert_eq!((limited.status, limited.retry_after_s), (429, Some(60)));
        assert_eq!(client_error("sim", 503, b"not json").status, 502);
    }
}
