//! Reads a client's request body with a size cap: a body over the cap is refused (413) from
//! its `Content-Length` before any of it is read, or as soon as the streamed bytes pass the cap.

use crate::openai::ApiError;
use futures_util::StreamExt;
use worker::Request;

/// The whole body, at most `limit` bytes.
pub async fn read(req: &mut Request, limit: u64) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    // No body at all reads as empty, which the JSON parser then refuses with a clear 400.
    let Ok(mut stream) = req.stream() else {
        return Ok(Vec::new());
    };
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::invalid_request("The request body could not be read.", None))?;
        if (body.len() as u64).saturating_add(chunk.len() as u64) > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
