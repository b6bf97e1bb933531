//! Response assembly: status, content type and the headers each dialect carries.

use std::time::Instant;

use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::bodies::Dialect;
use crate::body::SimBody;
use crate::clock::go_duration;
use crate::state::{Admission, Rate};

/// `application/json`.
pub const JSON: &str = "application/json";
/// `text/event-stream`.
pub const EVENT_STREAM: &str = "text/event-stream";

/// Sets a header, skipping values that are not valid header text (never the case for ours).
pub fn set_header(resp: &mut Response<SimBody>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// A response without dialect headers (control endpoint, unknown paths).
pub fn plain(status: StatusCode, content_type: &str, body: SimBody) -> Response<SimBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response without dialect headers.
pub fn plain_json(status: StatusCode, body: String) -> Response<SimBody> {
    plain(status, JSON, SimBody::full(body))
}

/// A response with the headers of `dialect`: DashScope's gateway headers, or OpenAI's request id.
pub fn answer(
    dialect: Dialect,
    request_id: &str,
    started: Instant,
    status: StatusCode,
    content_type: &str,
    body: SimBody,
) -> Response<SimBody> {
    let mut resp = plain(status, content_type, body);
    set_header(&mut resp, "x-request-id", request_id);
    if dialect == Dialect::DashScope {
        let cost = started.elapsed().as_millis().to_string();
        set_header(&mut resp, "x-dashscope-call-gateway", "true");
        set_header(&mut resp, "req-cost-time", &cost);
        set_header(&mut resp, "x-envoy-upstream-service-time", &cost);
        set_header(&mut resp, "server", "istio-envoy");
    }
    resp
}

/// A JSON answer in `dialect` (a fault's verbatim web page as `text/html`).
pub fn json_answer(
    dialect: Dialect,
    request_id: &str,
    started: Instant,
    status: u16,
    body: String,
) -> Response<SimBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A fault's verbatim web page (a proxy's, a relay console's) goes as what it is.
    let kind = match body.starts_with('<') {
        true => "text/html; charset=utf-8",
        false => JSON,
    };
    answer(
        dialect,
        request_id,
        started,
        status,
        kind,
        SimBody::full(body),
    )
}

/// OpenAI `x-ratelimit-*` headers (only the families whose limits are set), plus
/// `retry-after` and `retry-after-ms` on a refusal. DashScope sends none of these.
pub fn add_rate_headers(resp: &mut Response<SimBody>, admission: &Admission) {
    let family = |resp: &mut Response<SimBody>, rate: Option<Rate>, names: [&'static str; 3]| {
        if let Some(r) = rate {
            set_header(resp, names[0], &r.limit.to_string());
            set_header(resp, names[1], &r.remaining.to_string());
            set_header(resp, names[2], &go_duration(r.reset_ms));
        }
    };
    family(
        resp,
        admission.requests,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
    );
    family(
        resp,
        admission.tokens,
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    );
    if admission.refusal.is_some() {
        let ms = admission.wait_ms;
        set_header(resp, "retry-after", &ms.div_ceil(1000).to_string());
        set_header(resp, "retry-after-ms", &ms.to_string());
    }
}
