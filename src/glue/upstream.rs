//! Sends one request to an upstream account under a deadline and classifies the answer.

use crate::classify::{self, Outcome};
use crate::config::Candidate;
use crate::glue::respond;
use crate::openai::ApiError;
use futures_util::future::{select, Either};
use std::time::Duration;
use worker::{AbortController, Delay, Env, Fetch, Headers, Method, Request, RequestInit, Response};

/// A successful upstream answer: either the whole JSON body, or a stream to pass through.
pub enum Success {
    /// A non-streamed answer, read whole.
    Whole {
        /// HTTP status (2xx).
        status: u16,
        /// Body bytes.
        body: Vec<u8>,
    },
    /// A streamed answer: headers arrived, the body is still flowing; the controller aborts it.
    Stream(Response, AbortController),
}

/// Sends `body` to `candidate` with the key in secret `key_name`; `Err` carries the outcome.
pub async fn send(
    env: &Env,
    candidate: &Candidate<'_>,
    key_name: &str,
    body: Vec<u8>,
    stream: bool,
    timeout_ms: u64,
    now_ms: impl Fn() -> u64,
) -> Result<Success, Outcome> {
    let key = env.secret(key_name).map(|s| s.to_string()).map_err(|_| {
        Outcome::Client(ApiError::config(format!(
            "The secret {key_name} (accounts.{}.keys) is not set.",
            candidate.account
        )))
    })?;
    let request = build(&candidate.upstream.base_url, &key, body)
        .map_err(|e| Outcome::Client(respond::internal(e)))?;

    let controller = AbortController::default();
    let signal = controller.signal();
    let exchange = async {
        let mut resp = Fetch::Request(request).send_with_signal(&signal).await?;
        let status = resp.status_code();
        if (200..300).contains(&status) && stream {
            return Ok(Err(resp));
        }
        let headers: Vec<(String, String)> = resp.headers().entries().collect();
        let bytes = resp.bytes().await?;
        Ok::<_, worker::Error>(Ok((status, headers, bytes)))
    };
    let timer = Delay::from(Duration::from_millis(timeout_ms));
    futures_util::pin_mut!(exchange);
    let answer = match select(exchange, timer).await {
        Either::Left((answer, _)) => answer,
        Either::Right(_) => {
            controller.abort();
            return Err(Outcome::Retry { after_ms: None });
        }
    };
    match answer {
        Ok(Err(streaming)) => Ok(Success::Stream(streaming, controller)),
        Ok(Ok((status, _, body))) if (200..300).contains(&status) => {
            Ok(Success::Whole { status, body })
        }
        Ok(Ok((status, headers, body))) => Err(classify::classify(
            candidate.upstream.profile,
            status,
            &headers,
            &body,
            now_ms(),
        )),
        // Connection refused, reset or cut: a network failure, retried like a 5xx.
        Err(_) => Err(Outcome::Retry { after_ms: None }),
    }
}

fn build(base_url: &str, key: &str, body: Vec<u8>) -> worker::Result<Request> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("authorization", &format!("Bearer {key}"))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    Request::new_with_init(&format!("{base_url}/chat/completions"), &init)
}
