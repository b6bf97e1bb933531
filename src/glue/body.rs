//! Reads bodies whole. A client's request body has a size cap: a body over the cap is refused
//! (413) from its `Content-Length` before any of it is buffered, or as soon as the streamed
//! bytes pass the cap. What the client is still sending is then read and dropped in the
//! background, so it gets the 413 rather than a connection reset mid-upload.
//!
//! A body of known length is read by the runtime in one call (`arrayBuffer()`): the worker
//! crate's stream reading crosses into JavaScript several times per chunk (`read`,
//! `releaseLock`, a microtask), which the overhead benchmark's profile showed costing more of
//! the isolate's time than everything the gateway decides.

use crate::openai::ApiError;
use futures_util::StreamExt;
use worker::js_sys::Uint8Array;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, ByteStream, Context, Request};

/// Most bytes of a refused body drained in the background (beyond it the connection may reset).
const DRAIN_LIMIT_BYTES: u64 = 64 << 20;

/// The whole body, at most `limit` bytes.
pub async fn read(req: &web_sys::Request, ctx: &Context, limit: u64) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let unreadable = || ApiError::invalid_request("The request body could not be read.", None);
    if declared.is_some_and(|n| n <= limit) {
        // The runtime holds the body to its declared length.
        let buffer = req.array_buffer().map_err(|_| unreadable())?;
        return buffered(buffer).await.map_err(|_| unreadable());
    }
    // No body at all reads as empty, which the JSON parser then refuses with a clear 400. A
    // body of unknown length is rare (chunked uploads): read through the worker crate's stream.
    // (`web_sys::Request::clone` is the runtime's `clone()`: the handle is copied as a JsValue.)
    let handle: web_sys::Request = JsValue::clone(req.as_ref()).unchecked_into();
    let Ok(mut stream) = Request::from(handle).stream() else {
        return Ok(Vec::new());
    };
    if declared.is_some() {
        return Err(refuse(ctx, stream, limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable())?;
        if (body.len() as u64).saturating_add(chunk.len() as u64) > limit {
            return Err(refuse(ctx, stream, limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The bytes of an `arrayBuffer()` promise, copied into Rust.
async fn buffered(buffer: worker::js_sys::Promise) -> worker::Result<Vec<u8>> {
    let buffer = JsFuture::from(buffer).await?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// The 413, with the rest of the body drained (and dropped) off the hot path.
fn refuse(ctx: &Context, mut rest: ByteStream, limit: u64) -> ApiError {
    ctx.wait_until(async move {
        let mut drained = 0u64;
        while let Some(Ok(chunk)) = rest.next().await {
            drained = drained.saturating_add(chunk.len() as u64);
            if drained > DRAIN_LIMIT_BYTES {
                break;
            }
        }
    });
    ApiError::payload_too_large(limit)
}
