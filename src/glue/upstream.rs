//! Sends one request to an upstream account and reads its answer: the whole body, or a
//! stream's headers; anything else classified as an `Outcome`.

use crate::classify::{self, Outcome};
use crate::config::Candidate;
use crate::openai::ApiError;
use futures_util::future::{select, Either};
use std::time::Duration;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, AbortSignal, Delay, Env, Headers, Response};

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
    /// No answer (for a stream: no headers) within the time allowed; the caller aborts it.
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
    /// The request body for the upstream.
    pub body: Vec<u8>,
    /// Whether the answer is a stream (then only its headers are awaited).
    pub stream: bool,
    /// Longest wait for the answer (a stream's: for its headers).
    pub wait_ms: u64,
}

/// Makes the call; `signal` aborts it. Also says when the answer's headers arrived.
pub async fn send(
    env: &Env,
    attempt: Attempt<'_>,
    signal: &AbortSignal,
    now_ms: impl Fn() -> u64,
) -> (Sent, Option<Reached>) {
    let Attempt {
        candidate,
        key_name,
        body,
        stream,
        wait_ms,
    } = attempt;
    let Ok(key) = env.secret(key_name).map(|s| s.to_string()) else {
        let missing = ApiError::config(format!(
            "The secret {key_name} (accounts.{}.keys) is not set.",
            candidate.account
        ));
        return (Sent::Failed(Outcome::Client(missing)), None);
    };
    let url = format!("{}/chat/completions", candidate.upstream.base_url);
    let Ok(init) = init(&key, &body, signal) else {
        return (Sent::Failed(Outcome::Retry { after_ms: None }), None);
    };
    let exchange = async {
        // The runtime's fetch, called directly: the worker crate's Request and Response
        // wrappers cost a copy of each (and several calls into the runtime) per answer.
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let resp: web_sys::Response = JsFuture::from(global.fetch_with_str_and_init(&url, &init))
            .await?
            .dyn_into()?;
        let answer_headers = resp.headers();
        let reached = Reached {
            headers_at_ms: now_ms(),
            processing_ms: PROCESSING_HEADERS.iter().find_map(|name| {
                crate::hints::decimal_ms(&answer_headers.get(name).ok().flatten()?)
            }),
        };
        let status = resp.status();
        let served = (200..300).contains(&status);
        if served && stream {
            return Ok((Sent::Stream(Response::from(resp)), reached));
        }
        // Only a refusal's headers are read (one call into the runtime per header).
        let headers: Vec<(String, String)> = match served {
            true => Vec::new(),
            false => Headers(answer_headers).entries().collect(),
        };
        let body = crate::glue::body::whole(&resp).await?;
        let sent = if served {
            Sent::Whole { status, body }
        } else {
            let profile = candidate.upstream.profile;
            Sent::Failed(classify::classify(
                profile,
                status,
                &headers,
                &body,
                now_ms(),
            ))
        };
        Ok::<_, worker::Error>((sent, reached))
    };
    let timer = Delay::from(Duration::from_millis(wait_ms.max(1)));
    futures_util::pin_mut!(exchange);
    match select(exchange, timer).await {
        Either::Left((Ok((sent, reached)), _)) => (sent, Some(reached)),
        // Connection refused, reset or cut: a network failure, retried like a 5xx.
        Either::Left((Err(_), _)) => (Sent::Failed(Outcome::Retry { after_ms: None }), None),
        Either::Right(_) => (Sent::TimedOut, None),
    }
}

/// The POST with the key and the body, aborted by `signal`.
fn init(key: &str, body: &[u8], signal: &AbortSignal) -> worker::Result<web_sys::RequestInit> {
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    headers.set("authorization", &format!("Bearer {key}"))?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&Uint8Array::from(body));
    init.set_signal(Some(signal));
    Ok(init)
}
