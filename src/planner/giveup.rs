//! The error a client gets when the planner stops without an answer: which one, with which
//! status, `Retry-After` and wording, from what the planner learned.

use crate::openai::ApiError;

/// `Retry-After` when only the gateway's own bucket store failed: it is back within seconds.
pub const UNREACHABLE_RETRY_S: u64 = 2;

/// What the planner learned by the time it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts<'a> {
    /// The public model the client asked for.
    pub public_model: &'a str,
    /// Upstream models tried, in chain order.
    pub tried: Vec<&'a str>,
    /// Milliseconds until the earliest tried bucket frees, if any will by itself.
    pub earliest_free_in_ms: Option<u64>,
    /// Stopped by the deadline or the attempt cap rather than by running out of buckets.
    pub out_of_time: bool,
    /// Some bucket failed with server or network errors.
    pub server_error: bool,
    /// Some bucket's Durable Object could not be reached in time.
    pub unreachable: bool,
    /// Parked buckets, `account/model: reason` each.
    pub parked: &'a [String],
    /// Set when every tried bucket was too small for the request.
    pub too_large: Option<TooLarge>,
    /// Every tried upstream said it does not serve the model on the request's endpoint.
    pub unsupported: bool,
}

/// A request no tried bucket can hold: its estimate and the largest token limit seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// Estimated input plus reserved output tokens.
    pub est_tokens: u64,
    /// Of which input.
    pub prompt_tokens: u64,
    /// The field holding the input.
    pub input_param: &'static str,
    /// The largest per-request token limit among the candidates (None: unknown, the upstream
    /// said so itself).
    pub largest_limit: Option<u64>,
}

/// The client's error.
pub fn render(f: &Facts) -> ApiError {
    let models = f.tried.join(", ");
    if let Some(t) = &f.too_large {
        return too_large(f.public_model, t);
    }
    if f.unsupported {
        // As OpenAI answers a model called on an endpoint it does not serve.
        let mut e = ApiError::new(
            404,
            "invalid_request_error",
            Some("model_not_supported"),
            format!(
                "No upstream configured for `{}` serves it on this endpoint (tried {models}); call it through /v1/chat/completions.",
                f.public_model
            ),
        );
        e.param = Some("model".to_string());
        e.should_retry = Some(false);
        return e;
    }
    if let Some(wait_ms) = f.earliest_free_in_ms {
        let wait_s = wait_ms.div_ceil(1000).max(1);
        let mut e = ApiError::new(
            429,
            "rate_limit_exceeded",
            Some("rate_limit_exceeded"),
            format!(
                "No upstream capacity for `{}` {}: tried {models}. Retry after {wait_s} s.",
                f.public_model,
                if f.out_of_time {
                    "before the request deadline or attempt limit"
                } else {
                    "within the allowed wait"
                },
            ),
        );
        e.retry_after_s = Some(wait_s);
        return e;
    }
    if f.unreachable {
        let mut e = ApiError::new(
            503,
            "server_error",
            Some("quota_store_unavailable"),
            format!(
                "The gateway could not reach its quota counters for `{}` in time (tried {models}). Retry shortly.",
                f.public_model
            ),
        );
        e.retry_after_s = Some(UNREACHABLE_RETRY_S);
        return e;
    }
    if f.server_error || f.parked.is_empty() {
        return ApiError::bad_gateway(
            "upstream_error",
            format!(
                "Every upstream for `{}` failed (tried {models}).",
                f.public_model
            ),
        );
    }
    let mut e = ApiError::new(
        429,
        "rate_limit_exceeded",
        Some("upstreams_parked"),
        format!(
            "Every account for `{}` is parked until an operator clears it ({}); tried {models}.",
            f.public_model,
            f.parked.join("; ")
        ),
    );
    e.should_retry = Some(false);
    e
}

/// 400: the request itself must shrink; naming the field that can (the output reservation when
/// the input alone would fit).
fn too_large(public_model: &str, t: &TooLarge) -> ApiError {
    let output = t.est_tokens.saturating_sub(t.prompt_tokens);
    let (limit, param) = match t.largest_limit {
        Some(limit) => (
            format!(
                "the largest per-request token limit of any account that can serve it is {limit}"
            ),
            if t.prompt_tokens < limit {
                "max_tokens"
            } else {
                t.input_param
            },
        ),
        None => (
            "the upstream refused it as too large".to_string(),
            "max_tokens",
        ),
    };
    let shrink = match output {
        0 => format!("Shorten the {}.", t.input_param),
        _ => format!("Lower max_tokens or shorten the {}.", t.input_param),
    };
    let mut e = ApiError::invalid_request(
        format!(
            "This request needs an estimated {} tokens ({} input + {output} reserved for output) and {limit} for `{public_model}`. {shrink}",
            t.est_tokens, t.prompt_tokens
        ),
        Some(param),
    );
    e.code = Some("request_too_large".to_string());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts<'static> {
        Facts {
            public_model: "qwen3-max",
            tried: vec!["qwen3-max", "qwen-plus"],
            earliest_free_in_ms: None,
            out_of_time: false,
            server_error: false,
            unreachable: false,
            parked: &[],
            too_large: None,
            unsupported: false,
        }
    }

    #[test]
    fn too_large_names_the_estimate_the_limit_and_the_field() {
        let mut f = facts();
        f.earliest_free_in_ms = Some(5_000);
        f.too_large = Some(TooLarge {
            est_tokens: 100_000_003,
            prompt_tokens: 3,
            input_param: "messages",
            largest_limit: Some(1_000_000),
        });
        let e = render(&f);
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("request_too_large"))
        );
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert_eq!(e.should_retry, Some(false));
        for part in ["100000003", "1000000", "qwen3-max"] {
            assert!(e.message.contains(part), "{}", e.message);
        }
        assert!(!e.message.contains("parked"));
        f.too_large = Some(TooLarge {
            est_tokens: 3_000_000,
            prompt_tokens: 2_000_000,
            input_param: "messages",
            largest_limit: Some(1_000_000),
        });
        assert_eq!(render(&f).param.as_deref(), Some("messages"));
        // Embeddings: all input, no output to lower.
        f.too_large = Some(TooLarge {
            est_tokens: 2_000_000,
            prompt_tokens: 2_000_000,
            input_param: "input",
            largest_limit: Some(1_000_000),
        });
        let e = render(&f);
        assert_eq!(e.param.as_deref(), Some("input"));
        assert!(e.message.ends_with("Shorten the input."), "{}", e.message);
    }

    #[test]
    fn capacity_beats_store_failures_which_beat_server_errors_and_parks() {
        let parked = ["a/qwen3-max: free quota".to_string()];
        let mut f = facts();
        f.parked = &parked;
        f.unreachable = true;
        f.server_error = true;
        f.earliest_free_in_ms = Some(1_001);
        let e = render(&f);
        assert_eq!((e.status, e.retry_after_s), (429, Some(2)));
        f.earliest_free_in_ms = None;
        let e = render(&f);
        assert_eq!(
            (e.status, e.retry_after_s),
            (503, Some(UNREACHABLE_RETRY_S))
        );
        f.unreachable = false;
        assert_eq!(render(&f).status, 502);
        f.server_error = false;
        let e = render(&f);
        assert_eq!((e.status, e.should_retry), (429, Some(false)));
        assert!(e.message.contains("free quota"), "{}", e.message);
    }
}
