//! Building client responses: OpenAI-shaped errors, JSON answers, request ids, admin auth.

use crate::access::cors;
use crate::glue::js;
use crate::openai::ApiError;
use crate::routes;
use futures_util::Stream;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use worker::{web_sys, Env, Headers, Response, Result};

/// Bytes a header value cannot carry as is: controls and (by `utf8_percent_encode`) non-ASCII.
const NOT_IN_HEADERS: &AsciiSet = &CONTROLS.add(b'%');

/// A fresh id for `x-request-id`, from the platform's secure random source.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        return "gw-unknown".to_string();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("gw-{hex}")
}

/// Renders an `ApiError` with its status and the headers the official SDKs read.
pub fn error(e: &ApiError, path: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(s) = e.retry_after_s {
        headers.set("retry-after", &s.to_string())?;
    }
    if let Some(retry) = e.should_retry {
        headers.set("x-should-retry", if retry { "true" } else { "false" })?;
    }
    if e.status == 405 {
        headers.set("allow", routes::allowed_methods(path))?;
    }
    if e.status == 401 && path.starts_with("/admin") {
        // Lets a browser ask for the token (Basic; see `authorize_admin`).
        headers.set(
            "www-authenticate",
            "Basic realm=\"edge-gateway admin\", charset=\"UTF-8\"",
        )?;
    }
    Ok(Response::from_bytes(e.body().into_bytes())?
        .with_status(e.status)
        .with_headers(headers))
}

/// Sets a header, percent-encoding what a header value cannot carry, so an answer the
/// upstream was already paid for never fails on a header.
pub fn set_header(headers: &Headers, name: &str, value: &str) {
    // Names are ours and values are now safe: this cannot fail in practice.
    let _ = headers.set(name, &safe(value));
}

/// `set_header` for several headers, in one call into the runtime.
pub fn set_headers<V: AsRef<str>>(headers: &Headers, pairs: &[(&str, V)]) {
    let mut lines = String::new();
    for (name, value) in pairs {
        lines.push_str(name);
        lines.push('\n');
        lines.push_str(&safe(value.as_ref()));
        lines.push('\n');
    }
    // Names are ours and values are now safe: this cannot fail in practice.
    let _ = js::set_headers(&headers.0, &lines);
}

/// `value` with what a header value cannot carry (controls, line breaks, non-ASCII)
/// percent-encoded.
fn safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(utf8_percent_encode(value, NOT_IN_HEADERS).to_string())
    }
}

/// An answer with a body the upstream sent, its status and our headers.
pub fn bytes(
    status: u16,
    body: Vec<u8>,
    headers: Headers,
) -> std::result::Result<Response, ApiError> {
    let resp = Response::from_bytes(body).map_err(internal)?;
    Ok(resp.with_status(status).with_headers(headers))
}

/// A streamed answer with our headers.
pub fn stream<S>(body: S, headers: Headers) -> std::result::Result<Response, ApiError>
where
    S: Stream<Item = Result<Vec<u8>>> + 'static,
{
    let resp = Response::from_stream(body).map_err(internal)?;
    Ok(resp.with_headers(headers))
}

/// A JSON answer with the given status.
pub fn json(status: u16, body: String) -> std::result::Result<Response, ApiError> {
    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .map_err(internal)?;
    Ok(Response::from_bytes(body.into_bytes())
        .map_err(internal)?
        .with_status(status)
        .with_headers(headers))
}

/// Adds `x-request-id` to any answer.
pub fn with_request_id(mut resp: Response, request_id: &str) -> Result<Response> {
    resp.headers_mut().set("x-request-id", request_id)?;
    Ok(resp)
}

/// A runtime failure inside the gateway, reported without its details.
pub fn internal(_: worker::Error) -> ApiError {
    internal_error()
}

/// 500 for a failure of the runtime itself (no details: they could name internals).
pub fn internal_error() -> ApiError {
    ApiError::new(
        500,
        "server_error",
        Some("gateway_error"),
        "The gateway hit an internal error; retry the request.".to_string(),
    )
}

/// Checks the admin token against the `ADMIN_TOKEN` secret; no secret means no admin API.
pub fn authorize_admin(req: &web_sys::Request, env: &Env) -> std::result::Result<(), ApiError> {
    let token = env
        .secret("ADMIN_TOKEN")
        .map(|s| s.to_string())
        .unwrap_or_default();
    // Bearer for tools; Basic (any user name, the token as password) for the dashboard, whose
    // browser asks once and sends it with every call the page makes.
    let offered = bearer(req)
        .or_else(|| basic_password(req))
        .unwrap_or_default();
    if !token.is_empty() && constant_time_eq(token.as_bytes(), offered.as_bytes()) {
        let header = |name: &str| header(req, name);
        let writes = !matches!(req.method().as_str(), "GET" | "HEAD");
        let url = req.url();
        if writes
            && cors::cross_site(
                &url,
                header("origin").as_deref(),
                header("sec-fetch-site").as_deref(),
            )
        {
            let mut e = ApiError::new(
                403,
                "permission_error",
                Some("cross_site_admin_write"),
                "Admin changes are taken from the gateway's own pages or from tools, not from another site.".into(),
            );
            e.should_retry = Some(false);
            return Err(e);
        }
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "The admin API needs `Authorization: Bearer <ADMIN_TOKEN>` (or, in a browser, Basic with the token as password).",
        ))
    }
}

/// The password of `Authorization: Basic base64(user:password)`.
fn basic_password(req: &web_sys::Request) -> Option<String> {
    use base64::Engine;
    let value = header(req, "authorization")?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// The credential of `Authorization: Bearer <credential>`.
pub fn bearer(req: &web_sys::Request) -> Option<String> {
    let value = header(req, "authorization")?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

/// The value of the request's header `name`, if sent.
pub fn header(req: &web_sys::Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// Compares secrets in time independent of where they first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
