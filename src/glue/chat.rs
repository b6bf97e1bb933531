//! `POST /v1/chat/completions`: pick the account, take a bucket admission, forward, pass the answer back.

use crate::classify;
use crate::config::Config;
use crate::glue::{bucket, respond};
use crate::openai::{ApiError, ChatRequest};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, Response};

/// Serves one chat completion, streamed or not, from the first account of the model's first step.
pub async fn complete(
    mut req: Request,
    env: &Env,
    config: &Config,
    _request_id: &str,
) -> Result<Response, ApiError> {
    let bytes = req
        .bytes()
        .await
        .map_err(|_| ApiError::invalid_request("The request body could not be read.", None))?;
    let chat = ChatRequest::parse(&bytes)?;
    let route = config
        .models
        .get(&chat.model)
        .ok_or_else(|| ApiError::model_not_found(&chat.model))?;
    let step = route
        .fallback
        .first()
        .ok_or_else(|| ApiError::model_not_found(&chat.model))?;
    let candidate = config
        .candidates(step)
        .next()
        .ok_or_else(|| ApiError::config(format!("no account serves '{}'", step.model())))?;
    let key_name =
        candidate.settings.keys.first().ok_or_else(|| {
            ApiError::config(format!("accounts.{}.keys is empty", candidate.account))
        })?;
    let key = env.secret(key_name).map(|s| s.to_string()).map_err(|_| {
        ApiError::config(format!(
            "The secret {key_name} (accounts.{}.keys) is not set.",
            candidate.account
        ))
    })?;

    bucket::acquire(env, candidate.account, candidate.model).await?;

    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .map_err(respond::internal)?;
    headers
        .set("authorization", &format!("Bearer {key}"))
        .map_err(respond::internal)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(chat.upstream_body(candidate.model).into()));
    let url = format!("{}/chat/completions", candidate.upstream.base_url);
    let upstream_req = Request::new_with_init(&url, &init).map_err(respond::internal)?;
    let mut upstream = Fetch::Request(upstream_req).send().await.map_err(|_| {
        ApiError::bad_gateway(
            "upstream_unreachable",
            format!("Upstream '{}' could not be reached.", candidate.upstream_id),
        )
    })?;

    let status = upstream.status_code();
    if !(200..300).contains(&status) {
        let body = upstream.bytes().await.unwrap_or_default();
        return Err(classify::client_error(candidate.upstream_id, status, &body));
    }

    let out = Headers::new();
    let content_type = upstream
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .unwrap_or_else(|| "application/json".to_string());
    for (name, value) in [
        ("content-type", content_type.as_str()),
        ("x-gateway-requested-model", chat.model.as_str()),
        ("x-gateway-served-model", candidate.model),
        ("x-gateway-upstream", candidate.upstream_id),
        ("x-gateway-attempts", "1"),
    ] {
        out.set(name, value).map_err(respond::internal)?;
    }
    let (_, body) = upstream.into_parts();
    Ok(Response::from_body(body)
        .map_err(respond::internal)?
        .with_status(status)
        .with_headers(out))
}
