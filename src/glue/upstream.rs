//! Sends one request to an upstream account and reads its answer: the whole body, or a
//! stream's headers; anything else classified as an `Outcome`.

use crate::classify::{self, Outcome};
use crate::config::Candidate;
use crate::glue::js;
use crate::openai::{ApiError, Endpoint};
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::AbortController;
use worker::{web_sys, Env, Headers, Response};

/// How an upstream call went.
pub enum Sent {
    /// A non-streamed 2xx answer, read whole.
    Whole {
        /// HTTP status.
        status: u16,
        /// Body bytes.
        body: Vec<u8>,
    },
    /// A streamed 2xx answer: headers arrived, the body is still flowing.
    Stream(Response),
    /// Not served: what the answer means.
    Failed(Outcome),
    /// No answer (for a stream: no headers) within the time allowed: the call was aborted.
    TimedOut,
}

/// When an answer's headers arrived, and how long the upstream says it spent on it.
#[derive(Debug, Clone, Copy)]
pub struct Reached {
    /// Unix ms at which the headers arrived.
    pub headers_at_ms: u64,
    /// The upstream's own processing time (`req-cost-time`, `openai-processing-ms`), if sent.
    pub processing_ms: Option<u64>,
}

/// Headers in which upstreams report their processing time in ms.
const PROCESSING_HEADERS: [&str; 2] = ["req-cost-time", "openai-processing-ms"];

/// One upstream call to make.
pub struct Attempt<'a> {
    /// Where it goes.
    pub candidate: &'a Candidate<'a>,
    /// The secret holding the key to use.
    pub key_name: &'a str,
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// The request body for the upstream.
    pub body: Vec<u8>,
    /// Whether the answer is a stream (then only its headers are awaited).
    pub stream: bool,
    /// Longest wait for the answer (a stream's: for its headers).
    pub wait_ms: u64,
    /// The client's headers it takes along (`asks::DASHSCOPE_HEADERS`), as (name, value).
    pub headers: &'a [(&'static str, String)],
}

/// Makes the call; `controller` aborts it (as the deadline does: a runtime timer, cancelled
/// once the answer is in, or a stream's headers). Also says when the answer's headers arrived.
pub async fn send(
    env: &Env,
    attempt: Attempt<'_>,
    controller: &AbortController,
    now_ms: impl Fn() -> u64,
) -> (Sent, Option<Reached>) {
    let Attempt {
        candidate,
        key_name,
        endpoint,
        body,
        stream,
        wait_ms,
        headers: extra,
    } = attempt;
    let Ok(key) = env.secret(key_name).map(|s| s.to_string()) else {
        let missing = ApiError::config(format!(
            "The secret {key_name} (accounts.{}.keys) is not set.",
            candidate.account
        ));
        return (Sent::Failed(Outcome::Client(missing)), None);
    };
    let url = format!("{}/{}", candidate.upstream.base_url, endpoint.path());
    let signal = controller.signal();
    let exchange = async {
        // The runtime's fetch, with the request made and a whole answer read on the JavaScript
        // side (`helpers.js` `post`): one call and one promise for what takes a dozen calls,
        // two promises and the worker crate's copies from Rust.
        let body = Uint8Array::from(body.as_slice());
        let extra = match extra {
            [] => JsValue::UNDEFINED,
            pairs => {
                let flat = pairs
                    .iter()
                    .flat_map(|(n, v)| [JsValue::from(*n), JsValue::from(v)]);
                flat.collect::<js_sys::Array>().into()
            }
        };
        let sent = js::post(&url, &key, &body, &signal, stream, &extra);
        let answer: js_sys::Array = JsFuture::from(sent).await?.unchecked_into();
        let resp: web_sys::Response = answer.get(0).dyn_into()?;
        let answer_headers = resp.headers();
        let reached = Reached {
            headers_at_ms: answer.get(1).as_f64().map_or_else(&now_ms, |ms| ms as u64),
            processing_ms: PROCESSING_HEADERS.iter().find_map(|name| {
                crate::hints::decimal_ms(&answer_headers.get(name).ok().flatten()?)
            }),
        };
        let status = resp.status();
        let served = (200..300).contains(&status);
        if served && stream {
            let kind = answer_headers.get("content-type").ok().flatten();
            let sent = match classify::served_stream(kind.as_deref()) {
                Outcome::Success => Sent::Stream(Response::from(resp)),
                not_served => Sent::Failed(not_served),
            };
            return Ok((sent, reached));
        }
        // Only a refusal's headers are read (one call into the runtime per header).
        let headers: Vec<(String, String)> = match served {
            true => Vec::new(),
            false => Headers(answer_headers).entries().collect(),
        };
        let body = answer.get(2).dyn_into::<Uint8Array>()?.to_vec();
        let sent = if served {
            match classify::served_whole(&body) {
                Outcome::Success => Sent::Whole { status, body },
                not_served => Sent::Failed(not_served),
            }
        } else {
            let profile = candidate.upstream.profile;
            Sent::Failed(classify::classify_call(
                endpoint,
                profile,
                status,
                &headers,
                &body,
                now_ms(),
            ))
        };
        Ok::<_, worker::Error>((sent, reached))
    };
    // The deadline aborts the call: no Rust timer or future to race with it.
    let timer = js::abort_after(controller, wait_ms.max(1) as f64);
    let result = exchange.await;
    js::cancel_timer(&timer);
    match result {
        Ok((sent, reached)) => (sent, Some(reached)),
        Err(_) if js::timed_out(&signal) => (Sent::TimedOut, None),
        // Connection refused, reset or cut (or the call aborted because the client left): a
        // network failure, retried like a 5xx.
        Err(_) => (Sent::Failed(Outcome::Retry { after_ms: None }), None),
    }
}
