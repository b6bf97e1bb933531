//! A Rust Worker that forwards each request to `UPSTREAM` unchanged and returns the answer:
//! what any Rust Worker pays before it does anything (bench/overhead's "Rust pass-through").

use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{event, web_sys, Context, Env, Result};

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<web_sys::Response> {
    let upstream = env.var("UPSTREAM")?.to_string();
    let url = req.url();
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest.split_at(i).1))
        .unwrap_or("/");
    // `new Request(url, request)`, as the JS floor does: a Request serves as its own init.
    let init: &web_sys::RequestInit = req.unchecked_ref();
    let forwarded = web_sys::Request::new_with_str_and_init(&format!("{upstream}{path}"), init)?;
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let answer = JsFuture::from(global.fetch_with_request(&forwarded)).await?;
    Ok(answer.dyn_into::<web_sys::Response>().map_err(JsValue::from)?)
}
