//! Reads an upstream's answer and decides what it means for the bucket that sent it and for
//! the request (cooldown, park, retry, rotate, or fail to the client).
//!
//! Pure: the rules follow the classification table in `docs/upstream-errors.md`;
//! time comes in as `now_ms` (unix milliseconds).

use crate::config::Profile;
use crate::hints::retry_hint_ms;
use crate::openai::{ApiError, Endpoint};
use crate::redact;
use body::Parsed;
pub use body::UpstreamError;

mod body;

/// RPM / RPS windows (DashScope, OpenAI) are one minute: a request-limit 429 clears within it.
pub const REQUEST_LIMIT_COOLDOWN_MS: u64 = 60_000;
/// TPM / TPS limits are per minute too (the table's "~60 s").
pub const TOKEN_LIMIT_COOLDOWN_MS: u64 = 60_000;
/// DashScope's generic `Throttling`: the table suggests 30-60 s; the middle.
pub const THROTTLE_COOLDOWN_MS: u64 = 45_000;
/// A 429 no rule knows: assume the common one-minute window.
pub const UNKNOWN_LIMIT_COOLDOWN_MS: u64 = 60_000;
/// Surge protection (`limit_burst_rate`): how long this request avoids the bucket. The bucket
/// itself is not closed (the table's 5-15 s would idle it): it holds its rate at what was
/// working and ramps back in seconds (`pace`).
pub const BURST_BACKOFF_MS: u64 = 1_000;
/// DashScope platform capacity (503 `ModelServingError`): the table suggests 10-30 s.
pub const CAPACITY_COOLDOWN_MS: u64 = 20_000;
/// Anthropic-style overload (529 `overloaded_error`): the table suggests 10-60 s.
pub const OVERLOAD_COOLDOWN_MS: u64 = 30_000;
/// DashScope `Arrearage`: the table says "hours"; 3 h leaves an operator time to pay.
pub const ARREARAGE_PARK_MS: u64 = 3 * 3_600_000;
/// Missing permission (`AccessDenied`, a relay's 403): the table says "long"; 1 h, then one probe.
pub const ACCESS_DENIED_PARK_MS: u64 = 3_600_000;
/// A relay out of balance (402): 1 h, then one probe (an operator clears it after topping up).
pub const PAYMENT_PARK_MS: u64 = 3_600_000;
/// The upstream does not know the configured model (404, `model_not_found`): 1 h, then one probe.
pub const MODEL_MISSING_PARK_MS: u64 = 3_600_000;
/// A 2xx answer that is no API answer (`served_whole`): 1 h, then one probe.
pub const NOT_AN_API_ANSWER_PARK_MS: u64 = 3_600_000;
/// A stream whose first token did not come in time: avoid that bucket briefly.
pub const SLOW_START_COOLDOWN_MS: u64 = 5_000;
/// Daily quotas (Gemini `...PerDay...`, OpenAI RPD / TPD): they reset within a day.
pub const DAILY_COOLDOWN_MS: u64 = crate::hints::DAILY_MS;

/// What an upstream answer means for the bucket that sent it and for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: serve it.
    Success,
    /// A transient limit of this bucket (account x model): cool it for `cooldown_ms`, try elsewhere
    /// now. `hinted`: the upstream said how long; otherwise `cooldown_ms` is the table's default
    /// (a whole window), which the bucket may shorten when its own windows show the 429 came
    /// from jitter across a short window.
    Cooldown {
        kind: LimitKind,
        cooldown_ms: u64,
        hinted: bool,
    },
    /// Surge protection: back off `backoff_ms` (before jitter) and cut the bucket's rate, then ramp up.
    Burst { backoff_ms: u64 },
    /// Hard failure: park `scope` with `reason` (the upstream code) until an operator clears it,
    /// or for `for_ms` when set; then one probe.
    Park {
        scope: ParkScope,
        reason: String,
        for_ms: Option<u64>,
    },
    /// The upstream refused the API key (bad key, wrong region, a key's billing quota gone):
    /// never use that key again; the account's other keys may still serve, at once.
    KeyRefused { reason: String },
    /// Server-side or network failure: retry (bounded, backoff with full jitter), then rotate.
    /// `after_ms` when the upstream said how long to wait.
    Retry { after_ms: Option<u64> },
    /// Platform capacity / overload (DashScope 503 ModelServingError, ModelUnavailable, Anthropic 529):
    /// rotate to another upstream or model; cool this bucket for `cooldown_ms`.
    Unavailable { cooldown_ms: u64 },
    /// This single request is larger than the bucket's token limit: never retry it on this bucket.
    TooLarge,
    /// The upstream does not serve this model on the request's endpoint (the Responses API),
    /// though it may for chat: try elsewhere; the bucket, which chat shares, is not parked.
    Unsupported,
    /// The request itself is at fault (bad input, moderation, context too long, unknown model):
    /// return this error to the client; never retry, never downgrade.
    Client(ApiError),
}

/// Which limit a `Cooldown` hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute / second.
    Requests,
    /// Tokens per minute / second.
    Tokens,
    /// A throttle that does not say which limit.
    Throttle,
    /// A per-day quota.
    Daily,
}

/// What a `Park` takes out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkScope {
    /// One account x model.
    Bucket,
    /// Every model of one account (billing problems).
    Account,
}

impl Outcome {
    /// A short name for logs and counts.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "ok",
            Outcome::Cooldown { kind, .. } => match kind {
                LimitKind::Requests => "limit_requests",
                LimitKind::Tokens => "limit_tokens",
                LimitKind::Throttle => "throttled",
                LimitKind::Daily => "limit_daily",
            },
            Outcome::Burst { .. } => "limit_burst",
            Outcome::Park { .. } => "parked",
            Outcome::KeyRefused { .. } => "key_refused",
            Outcome::Retry { .. } => "server_error",
            Outcome::Unavailable { .. } => "unavailable",
            Outcome::TooLarge => "too_large",
            Outcome::Unsupported => "unsupported",
            Outcome::Client(_) => "client_error",
        }
    }

    /// The outcome with every wait it carries passed through `scale` (upstream time to real
    /// time: divided by the config's `time_scale`, 1 in production).
    pub fn scaled(self, scale: impl Fn(u64) -> u64) -> Outcome {
        match self {
            Outcome::Cooldown {
                kind,
                cooldown_ms,
                hinted,
            } => Outcome::Cooldown {
                kind,
                cooldown_ms: scale(cooldown_ms),
                hinted,
            },
            Outcome::Burst { backoff_ms } => Outcome::Burst {
                backoff_ms: scale(backoff_ms),
            },
            Outcome::Unavailable { cooldown_ms } => Outcome::Unavailable {
                cooldown_ms: scale(cooldown_ms),
            },
            Outcome::Park {
                scope,
                reason,
                for_ms,
            } => Outcome::Park {
                scope,
                reason,
                for_ms: for_ms.map(scale),
            },
            other => other,
        }
    }
}

impl Parsed {
    fn park(&self, scope: ParkScope, status: u16, for_ms: Option<u64>) -> Outcome {
        Outcome::Park {
            scope,
            reason: self.reason(status),
            for_ms,
        }
    }

    fn refuse_key(&self, status: u16) -> Outcome {
        Outcome::KeyRefused {
            reason: self.reason(status),
        }
    }
}

/// Classifies one upstream answer. `headers` are (lowercase name, value) pairs.
pub fn classify(
    profile: Profile,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    now_ms: u64,
) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    let p = Parsed::parse(body);
    let hint = retry_hint_ms(headers, p.up.message.as_deref(), now_ms).or(p.retry_delay_ms);
    match profile {
        Profile::Dashscope => dashscope(status, &p, hint),
        Profile::Openai => openai(status, &p, hint),
        Profile::OpenaiCompatible => relay(status, &p, hint),
    }
}

/// A whole 2xx answer: served, unless it is no API answer at all (not a JSON object: a web
/// page or a bot check where a relay's `base_url` misses its `/v1`, say), which would reach
/// the client as a 200 it cannot read and count nothing. Such an upstream answers every call
/// alike: its bucket is parked for an hour (then one probe), and the operator told.
pub fn served_whole(body: &[u8]) -> Outcome {
    let text = body.trim_ascii();
    match text.starts_with(b"{") && text.ends_with(b"}") {
        true => Outcome::Success,
        false => not_an_api_answer(),
    }
}

/// A 2xx answer to a stream request, by its `content_type`: served, unless it is a web page
/// (as `served_whole` says of a whole one).
pub fn served_stream(content_type: Option<&str>) -> Outcome {
    match content_type.is_some_and(|kind| kind.starts_with("text/html")) {
        true => not_an_api_answer(),
        false => Outcome::Success,
    }
}

/// What a 2xx that is no API answer is.
fn not_an_api_answer() -> Outcome {
    Outcome::Park {
        scope: ParkScope::Bucket,
        reason: "not_an_api_answer".to_string(),
        for_ms: Some(NOT_AN_API_ANSWER_PARK_MS),
    }
}

/// Classifies one upstream answer to a call on `endpoint`. An upstream may serve a model for
/// chat and not on the Responses API or text completion (DashScope serves the one for some
/// models, the other for its Qwen Coder models only; a relay may not have the path): there,
/// "no such model" (a 404, or a model-not-found code about no other parameter) is
/// `Unsupported`, never a park of the bucket chat shares. A message is not read for it:
/// "'temperature' is not supported with this model" is the request's.
pub fn classify_call(
    endpoint: Endpoint,
    profile: Profile,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    now_ms: u64,
) -> Outcome {
    let outcome = classify(profile, status, headers, body, now_ms);
    if !endpoint.may_lack_model() || !matches!(status, 400 | 404) {
        return outcome;
    }
    let p = Parsed::parse(body);
    let no_model = status == 404
        || (p.is(&["model_not_found", "model_not_supported", "ModelNotFound"])
            && p.up.param.as_deref().is_none_or(|param| param == "model"));
    match outcome {
        Outcome::Park { .. } | Outcome::Client(_) if no_model && !names_stored_context(&p) => {
            Outcome::Unsupported
        }
        other => other,
    }
}

/// Whether the error is about context the client named (a Responses API
/// `previous_response_id`, a conversation) that the upstream does not have.
fn names_stored_context(p: &Parsed) -> bool {
    matches!(
        p.up.param.as_deref(),
        Some("previous_response_id" | "conversation")
    ) || p.is(&["previous_response_not_found", "conversation_not_found"])
}

/// No answer (or, for a stream, no first token) before the time allowed: a stream that is slow
/// to start cools its bucket briefly so others are tried; a plain call is retried like a 5xx.
pub fn timed_out(stream: bool) -> Outcome {
    if stream {
        Outcome::Cooldown {
            kind: LimitKind::Throttle,
            cooldown_ms: SLOW_START_COOLDOWN_MS,
            hinted: true,
        }
    } else {
        Outcome::Retry { after_ms: None }
    }
}

/// An account whose every key the upstream refused cannot serve: its bucket parks until an
/// operator clears it (after replacing the keys).
pub fn every_key_refused(reason: &str) -> Outcome {
    Outcome::Park {
        scope: ParkScope::Bucket,
        reason: format!("{reason} (every key refused)"),
        for_ms: None,
    }
}

/// Classifies an error frame that arrived inside a 200 stream, with the status it stands for
/// (from `:HTTP_STATUS/NNN` or its code; unknown counts as a server error). Never `Success`.
pub fn classify_stream_error(
    profile: Profile,
    status: Option<u16>,
    body: &[u8],
    now_ms: u64,
) -> Outcome {
    match classify(profile, status.unwrap_or(500), &[], body, now_ms) {
        Outcome::Success => Outcome::Retry { after_ms: None },
        outcome => outcome,
    }
}

/// The HTTP status an upstream error code stands for, from the classification table of
/// `docs/upstream-errors.md` (case-insensitive; DashScope's dotted native codes
/// by their head or tail); None for codes the table does not know.
pub fn status_of_code(code: &str) -> Option<u16> {
    let c = code.to_ascii_lowercase();
    let c = c.as_str();
    // DashScope native codes nest with dots: `Throttling.RateQuota`, `Model.AccessDenied`.
    let head = c.split('.').next().unwrap_or(c);
    let last = c.rsplit('.').next().unwrap_or(c);
    let status = match c {
        _ if head == "throttling" || c.starts_with("limit_") => 429,
        "insufficient_quota"
        | "rate_limit_exceeded"
        | "resource_exhausted"
        | "prepaidbilloverdue"
        | "postpaidbilloverdue"
        | "commoditynotpurchased" => 429,
        "data_inspection_failed"
        | "datainspectionfailed"
        | "arrearage"
        | "context_length_exceeded"
        | "invalid_request_error" => 400,
        _ if head == "invalidparameter" => 400,
        "invalid_api_key" | "invalidapikey" => 401,
        "allocationquota.freetieronly" => 403,
        _ if last == "accessdenied" => 403,
        "model_not_found" | "model_not_supported" | "modelnotfound" => 404,
        "systemerror" | "modelservicefailed" | "requesttimeout" | "server_error" => 500,
        _ if head == "internalerror" || c == "internal_error" => 500,
        "modelservingerror" | "modelunavailable" | "service_unavailable" => 503,
        "overloaded_error" => 529,
        _ => return None,
    };
    Some(status)
}

fn cooldown(kind: LimitKind, hint: Option<u64>, default_ms: u64) -> Outcome {
    let cooldown_ms = hint.unwrap_or(default_ms);
    Outcome::Cooldown {
        kind,
        cooldown_ms,
        hinted: hint.is_some(),
    }
}

fn burst(hint: Option<u64>) -> Outcome {
    let backoff_ms = hint.unwrap_or(BURST_BACKOFF_MS);
    Outcome::Burst { backoff_ms }
}

fn unavailable(hint: Option<u64>, default_ms: u64) -> Outcome {
    let cooldown_ms = hint.unwrap_or(default_ms);
    Outcome::Unavailable { cooldown_ms }
}

/// DashScope billing problems: hard, although sent as 429.
const BILLING_CODES: [&str; 3] = [
    "PrepaidBillOverdue",
    "PostpaidBillOverdue",
    "CommodityNotPurchased",
];

fn dashscope(status: u16, p: &Parsed, hint: Option<u64>) -> Outcome {
    use LimitKind::{Requests, Throttle, Tokens};
    if p.is(&BILLING_CODES) {
        return p.park(ParkScope::Account, status, None);
    }
    if p.is(&["Arrearage"]) {
        return p.park(ParkScope::Account, status, Some(ARREARAGE_PARK_MS));
    }
    if p.is(&["AllocationQuota.FreeTierOnly"]) {
        return p.park(ParkScope::Bucket, status, None);
    }
    match status {
        429 if p.is(&["limit_burst_rate", "Throttling.BurstRate"])
            || p.says(&["rate increased too quickly"]) =>
        {
            burst(hint)
        }
        429 if p.is(&["limit_requests", "Throttling.RateQuota"])
            || p.says(&["request limit", "requests rate limit"]) =>
        {
            cooldown(Requests, hint, REQUEST_LIMIT_COOLDOWN_MS)
        }
        429 if p.is(&["insufficient_quota", "Throttling.AllocationQuota"]) => {
            if p.says(&["free allocated quota", "free quota"]) {
                p.park(ParkScope::Bucket, status, None)
            } else {
                cooldown(Tokens, hint, TOKEN_LIMIT_COOLDOWN_MS)
            }
        }
        429 if p.is(&["Throttling"])
            || p.says(&["throttling triggered", "too many requests in"]) =>
        {
            cooldown(Throttle, hint, THROTTLE_COOLDOWN_MS)
        }
        // Model, workspace or key permission: the gateway's credential, not the client's request.
        403 => p.park(ParkScope::Bucket, status, Some(ACCESS_DENIED_PARK_MS)),
        503 if p.is(&["ModelServingError", "ModelUnavailable"]) => {
            unavailable(hint, CAPACITY_COOLDOWN_MS)
        }
        _ => fallback(status, p, hint),
    }
}

fn openai(status: u16, p: &Parsed, hint: Option<u64>) -> Outcome {
    match status {
        429 if p.is(&["insufficient_quota"]) => p.refuse_key(status),
        429 if p.says(&["request too large"]) => Outcome::TooLarge,
        429 => rate_limit(p, hint),
        _ if status == 529 || p.is(&["overloaded_error"]) => {
            unavailable(hint, OVERLOAD_COOLDOWN_MS)
        }
        _ => fallback(status, p, hint),
    }
}

fn relay(status: u16, p: &Parsed, hint: Option<u64>) -> Outcome {
    if p.status.as_deref() == Some("RESOURCE_EXHAUSTED")
        || (status == 429 && !p.quota_ids.is_empty())
    {
        let any = |needle: &str| p.quota_ids.iter().any(|id| id.contains(needle));
        // Gemini sends a seconds-scale retryDelay even for daily quotas: only the day counts.
        if any("PerDay") {
            return cooldown(LimitKind::Daily, None, DAILY_COOLDOWN_MS);
        }
        let kind = match () {
            _ if any("Token") => LimitKind::Tokens,
            _ if any("Request") => LimitKind::Requests,
            _ => LimitKind::Throttle,
        };
        return cooldown(kind, hint, UNKNOWN_LIMIT_COOLDOWN_MS);
    }
    match status {
        429 if p.is(&["insufficient_quota"]) => {
            if p.says(&["free allocated quota", "free quota", "billing"]) {
                p.park(ParkScope::Bucket, status, None)
            } else {
                cooldown(LimitKind::Tokens, hint, TOKEN_LIMIT_COOLDOWN_MS)
            }
        }
        429 if p.is(&["limit_burst_rate"]) || p.says(&["rate increased too quickly"]) => {
            burst(hint)
        }
        429 if p.says(&["request too large"]) => Outcome::TooLarge,
        429 => rate_limit(p, hint),
        _ if status == 529
            || p.is(&["overloaded_error"])
            || (status == 503 && p.says(&["overloaded"])) =>
        {
            unavailable(hint, OVERLOAD_COOLDOWN_MS)
        }
        _ => fallback(status, p, hint),
    }
}

/// An OpenAI-shaped 429: which limit from `type` and the message, how long from the hint.
fn rate_limit(p: &Parsed, hint: Option<u64>) -> Outcome {
    let (kind, default_ms) = if p.says(&["per day", "(rpd)", "(tpd)", "daily"]) {
        (LimitKind::Daily, DAILY_COOLDOWN_MS)
    } else if p.is(&["tokens"]) || p.says(&["token"]) {
        (LimitKind::Tokens, TOKEN_LIMIT_COOLDOWN_MS)
    } else if p.is(&["requests", "rate_limit_exceeded", "limit_requests"])
        || p.says(&["requests per", "(rpm)", "(rps)", "request limit"])
    {
        (LimitKind::Requests, REQUEST_LIMIT_COOLDOWN_MS)
    } else {
        (LimitKind::Throttle, UNKNOWN_LIMIT_COOLDOWN_MS)
    };
    cooldown(kind, hint, default_ms)
}

/// What no specific rule decided, for every profile. The model name and the credentials are
/// the gateway's own, so a 401-404 is about this account, not the client's request: rotate.
/// Only errors about the request's content (400 bad parameters, moderation, context too long,
/// 413, 422, stored context the upstream does not hold) go back to the client.
fn fallback(status: u16, p: &Parsed, hint: Option<u64>) -> Outcome {
    match status {
        // Context the client named that the upstream does not have: the request's, whatever
        // the status, never the account's.
        400..=499 if names_stored_context(p) => Outcome::Client(client(status, &p.up)),
        401 => p.refuse_key(status),
        402 => p.park(ParkScope::Account, status, Some(PAYMENT_PARK_MS)),
        403 => p.park(ParkScope::Bucket, status, Some(ACCESS_DENIED_PARK_MS)),
        404 => p.park(ParkScope::Bucket, status, Some(MODEL_MISSING_PARK_MS)),
        400..=499 if p.is(&["model_not_found", "model_not_supported", "ModelNotFound"]) => {
            p.park(ParkScope::Bucket, status, Some(MODEL_MISSING_PARK_MS))
        }
        408 | 409 => Outcome::Retry { after_ms: hint },
        429 => cooldown(LimitKind::Throttle, hint, UNKNOWN_LIMIT_COOLDOWN_MS),
        400..=499 => Outcome::Client(client(status, &p.up)),
        _ => Outcome::Retry { after_ms: hint },
    }
}

/// An upstream's refusal of a call passed through as it is (about a stored response: not
/// found, deleted), for the client: a 4xx as the upstream said it, with no key in it; else 502.
pub fn passed_through(status: u16, body: &[u8]) -> ApiError {
    let up = UpstreamError::parse(body);
    match status {
        400..=499 => client(status, &up),
        _ => ApiError::bad_gateway("upstream_error", format!("The upstream failed ({status}).")),
    }
}

/// The upstream's own error for the client: status, type, code, param and a key-free message.
fn client(status: u16, up: &UpstreamError) -> ApiError {
    let message = up.message.as_deref().map_or_else(
        || format!("The upstream rejected the request ({status})."),
        redact::keys,
    );
    let kind = up.kind.as_deref().unwrap_or("invalid_request_error");
    let mut e = ApiError::new(status, kind, up.code.as_deref(), message);
    e.param = up.param.clone();
    e.should_retry = Some(false);
    e
}

#[cfg(test)]
mod tests;
