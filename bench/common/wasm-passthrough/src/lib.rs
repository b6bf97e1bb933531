//! A Rust Worker that forwards each request to `UPSTREAM` unchanged and returns the answer:
//! what any Rust Worker pays before it does anything (bench/overhead's "Rust pass-through");
//! with `?io`, the I/O a gateway that counts tokens cannot skip, and no decision (its "Rust I/O
//! floor", the twin of bench/common/passthrough.js's `?io`).

use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::Uint8Array;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{event, web_sys, Context, Env, Error, Result};

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<web_sys::Response> {
    let upstream = env.var("UPSTREAM")?.to_string();
    let url = req.url();
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest.split_at(i).1))
        .unwrap_or("/");
    if let Some(path) = path.strip_suffix("?io") {
        return io(req, &format!("{upstream}{path}")).await;
    }
    // `new Request(url, request)`, as the JS floor does: a Request serves as its own init.
    let init: &web_sys::RequestInit = req.unchecked_ref();
    let forwarded = web_sys::Request::new_with_str_and_init(&format!("{upstream}{path}"), init)?;
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let answer = JsFuture::from(global.fetch_with_request(&forwarded)).await?;
    Ok(answer.dyn_into::<web_sys::Response>().map_err(JsValue::from)?)
}

/// Reads the body whole and parses it (to know the model and count tokens), sends it again as
/// a new request under a deadline, reads the answer whole and parses it (for its usage), and
/// answers it in a new Response with a header the usage fills: the leanest way in Rust, through
/// the runtime's own types (no log line, no key of its own: the caller's is passed on).
async fn io(req: web_sys::Request, url: &str) -> Result<web_sys::Response> {
    let json = |e: serde_json::Error| Error::RustError(e.to_string());
    let body = bytes(req.array_buffer()?).await?;
    let chat: serde_json::Value = serde_json::from_slice(&body).map_err(json)?;
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    let key = req.headers().get("authorization")?.unwrap_or_default();
    headers.set("authorization", &key)?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&Uint8Array::from(serde_json::to_vec(&chat).map_err(json)?.as_slice()));
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(60_000)));
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: web_sys::Response = JsFuture::from(global.fetch_with_str_and_init(url, &init))
        .await?
        .dyn_into()?;
    let mut answer = bytes(resp.array_buffer()?).await?;
    let usage: serde_json::Value = serde_json::from_slice(&answer).map_err(json)?;
    let tokens = usage["usage"]["total_tokens"].as_u64().unwrap_or(0);
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    headers.set("x-usage-total-tokens", &tokens.to_string())?;
    let init = web_sys::ResponseInit::new();
    init.set_status(resp.status());
    init.set_headers(&headers);
    Ok(web_sys::Response::new_with_opt_u8_array_and_init(
        Some(answer.as_mut_slice()),
        &init,
    )?)
}

/// The bytes of an `arrayBuffer()` promise, copied into Rust.
async fn bytes(buffer: js_sys::Promise) -> Result<Vec<u8>> {
    Ok(Uint8Array::new(&JsFuture::from(buffer).await?).to_vec())
}
