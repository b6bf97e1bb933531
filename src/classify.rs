//! Reads an upstream's answer and decides what it means for the bucket that sent it and for
//! the request (cooldown, park, retry, rotate, or fail to the client).
//!
//! Pure: the rules follow the classification table in `shared/reference/upstream-errors.md`;
//! time comes in as `now_ms` (unix milliseconds).

use crate::config::Profile;
use crate::openai::ApiError;
use serde_json::{Map, Value};

/// RPM / RPS windows (DashScope, OpenAI) are one minute: a request-limit 429 clears within it.
pub const REQUEST_LIMIT_COOLDOWN_MS: u64 = 60_000;
/// TPM / TPS limits are per minute too (the table's "~60 s").
pub const TOKEN_LIMIT_COOLDOWN_MS: u64 = 60_000;
/// DashScope's generic `Throttling`: the table suggests 30-60 s; the middle.
pub const THROTTLE_COOLDOWN_MS: u64 = 45_000;
/// A 429 no rule knows: assume the common one-minute window.
pub const UNKNOWN_LIMIT_COOLDOWN_MS: u64 = 60_000;
/// Surge protection (`limit_burst_rate`): the table suggests 5-15 s; 8 s lets the burst
/// window pass without idling the bucket for long (jitter is added by the caller).
pub const BURST_BACKOFF_MS: u64 = 8_000;
/// DashScope platform capacity (503 `ModelServingError`): the table suggests 10-30 s.
pub const CAPACITY_COOLDOWN_MS: u64 = 20_000;
/// Anthropic-style overload (529 `overloaded_error`): the table suggests 10-60 s.
pub const OVERLOAD_COOLDOWN_MS: u64 = 30_000;
/// DashScope `Arrearage`: the table says "hours"; 3 h leaves an operator time to pay.
pub const ARREARAGE_PARK_MS: u64 = 3 * 3_600_000;
/// Missing permission (`AccessDenied`): the table says "long"; 1 h, then one probe.
pub const ACCESS_DENIED_PARK_MS: u64 = 3_600_000;
/// Daily quotas (Gemini `...PerDay...`, OpenAI RPD / TPD): they reset within a day.
pub const DAILY_COOLDOWN_MS: u64 = 24 * 3_600_000;
/// The longest wait an upstream's hint may impose: a day, the longest documented window;
/// a bogus hint cannot park a bucket for years.
pub const MAX_HINT_MS: u64 = DAILY_COOLDOWN_MS;

const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;

/// What an upstream answer means for the bucket that sent it and for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: serve it.
    Success,
    /// A transient limit of this bucket (account x model): cool it for `cooldown_ms`, try elsewhere now.
    Cooldown { kind: LimitKind, cooldown_ms: u64 },
    /// Surge protection: back off `backoff_ms` (before jitter) and cut the bucket's rate, then ramp up.
    Burst { backoff_ms: u64 },
    /// Hard failure: park `scope` with `reason` (the upstream code) until an operator clears it,
    /// or for `for_ms` when set; then one probe.
    Park {
        scope: ParkScope,
        reason: String,
        for_ms: Option<u64>,
    },
    /// Server-side or network failure: retry (bounded, backoff with full jitter), then rotate.
    /// `after_ms` when the upstream said how long to wait.
    Retry { after_ms: Option<u64> },
    /// Platform capacity / overload (DashScope 503 ModelServingError, ModelUnavailable, Anthropic 529):
    /// rotate to another upstream or model; cool this bucket for `cooldown_ms`.
    Unavailable { cooldown_ms: u64 },
    /// This single request is larger than the bucket's token limit: never retry it on this bucket.
    TooLarge,
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
    /// One API key (bad key, or an OpenAI key whose billing quota is gone).
    Key,
    /// One account x model.
    Bucket,
    /// Every model of one account (billing problems).
    Account,
}

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
    let root = match serde_json::from_slice::<Value>(body) {
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
struct Parsed {
    up: UpstreamError,
    /// Lowercased message, for text rules.
    text: String,
    /// Google's `error.status`, e.g. `RESOURCE_EXHAUSTED`.
    status: Option<String>,
    /// Google's `RetryInfo.retryDelay`.
    retry_delay_ms: Option<u64>,
    /// Google's `QuotaFailure.violations[].quotaId`.
    quota_ids: Vec<String>,
}

impl Parsed {
    fn parse(body: &[u8]) -> Parsed {
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
    fn is(&self, names: &[&str]) -> bool {
        let field = |f: &Option<String>| {
            f.as_deref()
                .is_some_and(|v| names.iter().any(|n| v.eq_ignore_ascii_case(n)))
        };
        field(&self.up.code) || field(&self.up.kind)
    }

    /// Whether the message contains one of `needles` (lowercase), ignoring case.
    fn says(&self, needles: &[&str]) -> bool {
        needles.iter().any(|n| self.text.contains(n))
    }

    fn park(&self, scope: ParkScope, status: u16, for_ms: Option<u64>) -> Outcome {
        let reason = self.up.code.as_ref().or(self.up.kind.as_ref());
        Outcome::Park {
            scope,
            reason: reason.cloned().unwrap_or_else(|| format!("http_{status}")),
            for_ms,
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

fn cooldown(kind: LimitKind, hint: Option<u64>, default_ms: u64) -> Outcome {
    let cooldown_ms = hint.unwrap_or(default_ms);
    Outcome::Cooldown { kind, cooldown_ms }
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
        429 if p.is(&["insufficient_quota"]) => p.park(ParkScope::Key, status, None),
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

/// What no specific rule decided, for every profile.
fn fallback(status: u16, p: &Parsed, hint: Option<u64>) -> Outcome {
    match status {
        401 => p.park(ParkScope::Key, status, None),
        408 => Outcome::Retry { after_ms: hint },
        429 => cooldown(LimitKind::Throttle, hint, UNKNOWN_LIMIT_COOLDOWN_MS),
        400..=499 => Outcome::Client(client(status, &p.up)),
        _ => Outcome::Retry { after_ms: hint },
    }
}

/// The upstream's own error for the client: status, type, code, param and a key-free message.
fn client(status: u16, up: &UpstreamError) -> ApiError {
    let message = up.message.as_deref().map_or_else(
        || format!("The upstream rejected the request ({status})."),
        redact_keys,
    );
    let kind = up.kind.as_deref().unwrap_or("invalid_request_error");
    let mut e = ApiError::new(status, kind, up.code.as_deref(), message);
    e.param = up.param.clone();
    e.should_retry = Some(false);
    e
}

/// Replaces every key-like token (`sk-` followed by key characters, at a word start) with `[redacted]`.
fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, after)) = rest.split_once("sk-") {
        out.push_str(before);
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
            .unwrap_or(after.len());
        let word_start = !out
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '-' | '_'));
        if len > 0 && word_start {
            out.push_str("[redacted]");
            rest = after.get(len..).unwrap_or("");
        } else {
            out.push_str("sk-");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The error a client gets for a non-2xx upstream answer.
///
/// Client mistakes keep the upstream's status and fields; credential and server failures
/// become 502s that name the upstream id and never repeat the upstream's text about keys.
pub fn client_error(upstream_id: &str, status: u16, body: &[u8]) -> ApiError {
    let up = UpstreamError::parse(body);
    let code = up.code.as_deref();
    let message = up.message.as_deref().map(redact_keys);
    match status {
        400 | 404 | 409 | 413 | 422 => client(status, &up),
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
                    message.as_deref().unwrap_or("429 Too Many Requests")
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
                message.as_deref().unwrap_or("no message")
            ),
        ),
    }
}

/// The wait an upstream asked for, from `retry-after-ms`, `retry-after` (seconds or HTTP date),
/// `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (Go durations: 12ms, 1s, 6m0s, 1h2m3.5s),
/// or the message text ("Please try again in 644ms." / "in 1.5s" / "in 20s"), or Gemini's `retryDelay` ("34s").
///
/// Sources are tried in that order; an unreadable one is skipped. Of the reset headers, those whose
/// `x-ratelimit-remaining-*` is 0 count (the longest wins); all of them when no remaining header
/// is present. `retryDelay` is found in the message text (pass the raw body to use it). The
/// result is capped at `MAX_HINT_MS`; a date in the past gives 0.
pub fn retry_hint_ms(
    headers: &[(String, String)],
    message: Option<&str>,
    now_ms: u64,
) -> Option<u64> {
    let hint = header(headers, "retry-after-ms")
        .and_then(|v| decimal_ns(v, NS_PER_MS))
        .map(ns_to_ms)
        .or_else(|| {
            let v = header(headers, "retry-after")?;
            decimal_ns(v, NS_PER_S)
                .map(ns_to_ms)
                .or_else(|| http_date_ms(v).map(|at| at.saturating_sub(now_ms)))
        })
        .or_else(|| ratelimit_reset_ms(headers))
        .or_else(|| message.and_then(message_hint_ms));
    hint.map(|ms| ms.min(MAX_HINT_MS))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn ratelimit_reset_ms(headers: &[(String, String)]) -> Option<u64> {
    let (mut exhausted, mut any, mut saw_remaining) = (None, None, false);
    for kind in ["requests", "tokens"] {
        let remaining = header(headers, &format!("x-ratelimit-remaining-{kind}"))
            .and_then(|v| v.parse::<u64>().ok());
        saw_remaining |= remaining.is_some();
        let reset = header(headers, &format!("x-ratelimit-reset-{kind}")).and_then(|v| {
            parse_go_duration_ms(v).or_else(|| decimal_ns(v, NS_PER_S).map(ns_to_ms))
        });
        if let Some(ms) = reset {
            any = any.max(Some(ms));
            if remaining == Some(0) {
                exhausted = exhausted.max(Some(ms));
            }
        }
    }
    if saw_remaining {
        exhausted
    } else {
        any
    }
}

/// A wait named in free text: "try again in 644ms", "retry in 34.6s", "try again in 20 seconds",
/// or a JSON `"retryDelay": "34s"`.
fn message_hint_ms(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    ["try again in ", "retry in ", "retrydelay"]
        .iter()
        .find_map(|marker| {
            lower
                .split(marker)
                .skip(1)
                .find_map(|after| duration_at(after.trim_start_matches(['"', '\'', ':', ' '])))
        })
}

/// The duration at the start of `text`: a Go duration, or a number and a unit word.
fn duration_at(text: &str) -> Option<u64> {
    let punct: &[char] = &['.', ',', ';', ')', '}', ']', '"', '\''];
    let mut words = text.split_whitespace();
    let first = words.next()?.trim_end_matches(punct);
    if let Some(ms) = parse_go_duration_ms(first) {
        return Some(ms);
    }
    let unit_ns = match words.next()?.trim_end_matches(punct) {
        "ms" | "millisecond" | "milliseconds" => NS_PER_MS,
        "s" | "sec" | "secs" | "second" | "seconds" => NS_PER_S,
        "min" | "mins" | "minute" | "minutes" => 60 * NS_PER_S,
        "h" | "hour" | "hours" => 3_600 * NS_PER_S,
        _ => return None,
    };
    decimal_ns(first, unit_ns).map(ns_to_ms)
}

/// Parses a Go-style duration (`12ms`, `1s`, `6m0s`, `1.5s`, `1h2m3s`) to milliseconds.
///
/// Units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; a bare `0` is zero; negative or unitless values
/// are `None`. Sub-millisecond remainders round up.
pub fn parse_go_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at_checked(num_len)?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at_checked(unit_len)?;
        let unit_ns = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => NS_PER_MS,
            "s" => NS_PER_S,
            "m" => 60 * NS_PER_S,
            "h" => 3_600 * NS_PER_S,
            _ => return None,
        };
        total = total.checked_add(decimal_ns(num, unit_ns)?)?;
        rest = next;
    }
    u64::try_from(total.div_ceil(NS_PER_MS)).ok()
}

/// `12`, `1.5` or `.5` times `unit_ns` (a power of ten times 1, 6 or 36), exactly.
fn decimal_ns(s: &str, unit_ns: u128) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let mut ns = match int {
        "" => 0,
        _ => int.parse::<u128>().ok()?.checked_mul(unit_ns)?,
    };
    let mut scale = unit_ns;
    for b in frac.bytes() {
        scale /= 10;
        ns = ns.checked_add(u128::from(b - b'0') * scale)?;
    }
    Some(ns)
}

fn ns_to_ms(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(NS_PER_MS)).unwrap_or(u64::MAX)
}

/// Unix milliseconds of an IMF-fixdate, `Wed, 21 Oct 2015 07:28:00 GMT`.
fn http_date_ms(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) || *h > 23 || *m > 59 || *sec > 60
    {
        return None;
    }
    // Days from civil (H. Hinnant), with March as the first month of the year.
    let month = i64::try_from(month).ok()? + 1;
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + h * 3_600 + m * 60 + sec;
    u64::try_from(secs).ok()?.checked_mul(1_000)
}

#[cfg(test)]
mod tests;
