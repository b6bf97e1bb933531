//! Bindings of `helpers.js`: small JavaScript helpers that save calls across the wasm boundary
//! on the request path.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::js_sys::{Function, Promise, Uint8Array};
use worker::web_sys::{AbortController, AbortSignal, Headers};

#[wasm_bindgen(module = "/src/glue/helpers.js")]
extern "C" {
    /// Sets each pair of `lines` ("name\nvalue\n...") on `headers` (an invalid one is an
    /// error, not an exception through the wasm frames).
    #[wasm_bindgen(js_name = setHeaders, catch)]
    pub fn set_headers(headers: &Headers, lines: &str) -> Result<(), JsValue>;

    /// Aborts `controller` with a `TimeoutError` after `ms`; the timer, for `cancel_timer`.
    #[wasm_bindgen(js_name = abortAfter)]
    pub fn abort_after(controller: &AbortController, ms: f64) -> JsValue;

    /// Stops a timer of `abort_after`.
    #[wasm_bindgen(js_name = cancelTimer)]
    pub fn cancel_timer(timer: &JsValue);

    /// Whether `signal` was aborted by the timer of `abort_after`.
    #[wasm_bindgen(js_name = timedOut)]
    pub fn timed_out(signal: &AbortSignal) -> bool;

    /// Watches the client of one request (`signal`): calls `left(id)` if it leaves before the
    /// returned function is called; the invocation lives until then (see helpers.js).
    pub fn watch(ctx: &JsValue, signal: &AbortSignal, left: &JsValue, id: u32) -> Function;

    /// POSTs `body` to `url` with `key` (and `extra` headers: undefined, or an array of
    /// names and values in turn), aborted by `signal`: a promise of [the response, when its
    /// headers arrived (Unix ms), its body whole or null for a served stream].
    pub fn post(
        url: &str,
        key: &str,
        body: &Uint8Array,
        signal: &AbortSignal,
        stream: bool,
        extra: &JsValue,
    ) -> Promise;

    /// Sends `method` to `url` with `key` and no body, aborted by `signal`: a promise of
    /// [the response, its body whole].
    pub fn call(method: &str, url: &str, key: &str, signal: &AbortSignal) -> Promise;

    /// POSTs `body` (JSON) to the webhook `url`: a promise of the answer's status, 0 for none
    /// within `ms` (never an error, which may hold the URL).
    pub fn notify(url: &str, body: &str, ms: f64) -> Promise;

    /// A promise that resolves when `signal` aborts.
    #[wasm_bindgen(js_name = whenAborted)]
    pub fn when_aborted(signal: &AbortSignal) -> Promise;
}
