//! HTTP/1.1 server: accept loop, per-connection service and routing by path.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::bodies::{self, Dialect};
use crate::body::{Aborted, SimBody};
use crate::chat;
use crate::completion::ChatRequest;
use crate::control::control;
use crate::respond::plain_json;
use crate::state::{lock, SimState};

/// Largest request body read (larger ones get 413).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Serves connections until `shutdown` fires (or its sender is dropped), then drops them all.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Mutex<SimState>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state)));
                }
                // Out of descriptors and the like: pause instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, state: Arc<Mutex<SimState>>) {
    // Stream events must leave at once, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(Arc::clone(&state), req));
    // A failed connection is the client's or a deliberate reset; nothing to report.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The bearer token of a request, or "" when there is none.
fn bearer(headers: &HeaderMap) -> String {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim().to_string(),
        _ => String::new(),
    }
}

async fn handle(
    state: Arc<Mutex<SimState>>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Aborted> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let msg = bodies::invalid_parameter(Dialect::OpenAi, "", "request body too large");
            return Ok(plain_json(StatusCode::PAYLOAD_TOO_LARGE, msg));
        }
        // The client went away while sending; there is no one to answer.
        Err(_) => return Err(Aborted),
    };
    let path = parts.uri.path();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return Ok(control(&state, &parts.method, rest, &body));
    }
    let (dialect, endpoint) = if let Some(rest) = path.strip_prefix("/compatible-mode/v1/") {
        (Dialect::DashScope, rest)
    } else if let Some(rest) = path.strip_prefix("/v1/") {
        (Dialect::OpenAi, rest)
    } else {
        return Ok(plain_json(StatusCode::NOT_FOUND, bodies::not_found(path)));
    };
    let key = bearer(&parts.headers);
    let session_cache = parts.headers.get("x-dashscope-session-cache");
    let session_cache = session_cache.is_some_and(|v| v == "enable");
    if session_cache {
        lock(&state).record_session_cache(&key);
    }
    let call = chat::Call {
        dialect,
        key: &key,
        session_cache: session_cache && dialect == Dialect::DashScope,
    };
    match (endpoint, &parts.method) {
        ("chat/completions", &Method::POST) => {
            chat::chat(&state, call, &body, ChatRequest::parse, started).await
        }
        ("responses", &Method::POST) => {
            let parse = ChatRequest::parse_responses;
            chat::chat(&state, call, &body, parse, started).await
        }
        ("completions", &Method::POST) => {
            let parse = ChatRequest::parse_completions;
            chat::chat(&state, call, &body, parse, started).await
        }
        ("embeddings", &Method::POST) => {
            let parse = ChatRequest::parse_embeddings;
            chat::chat(&state, call, &body, parse, started).await
        }
        ("models", &Method::GET) => Ok(chat::models(&state, dialect, &key, started)),
        (stored, method @ (&Method::GET | &Method::DELETE)) if stored.starts_with("responses/") => {
            let rest = stored.trim_start_matches("responses/");
            let delete = method == Method::DELETE;
            let answer = chat::stored_response(&state, dialect, &key, delete, rest, started);
            Ok(answer)
        }
        ("chat/completions" | "responses" | "completions" | "embeddings" | "models", _) => {
            let msg = bodies::invalid_parameter(Dialect::OpenAi, "", "method not allowed");
            Ok(plain_json(StatusCode::METHOD_NOT_ALLOWED, msg))
        }
        _ => Ok(plain_json(StatusCode::NOT_FOUND, bodies::not_found(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), "");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-a1"));
        assert_eq!(bearer(&h), "sk-a1");
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer  sk-a2 "));
        assert_eq!(bearer(&h), "sk-a2");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), "");
    }
}
