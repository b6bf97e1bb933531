//! Calls about a response stored upstream (retrieve, delete, list its input items), sent to
//! the account that holds it: the one its id's tag names (`crate::affinity`).

use crate::access::{self, Identity};
use crate::affinity::{self, Owner};
use crate::classify;
use crate::config::Config;
use crate::glue::{js, respond};
use crate::openai::ApiError;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::AbortController;
use worker::{web_sys, Env, Headers, Response};

/// Whom the responses a caller stores belong to: a user token's user, sealed with its
/// client's signing secrets; None for a client key (`affinity::Owner`). A user whose seal
/// cannot be made (its token was checked with those secrets, so only a changed config) is
/// refused, never taken for a client key.
pub fn owner(env: &Env, identity: &Identity) -> Result<Option<Owner>, ApiError> {
    let Some(user) = identity.user.clone() else {
        return Ok(None);
    };
    let names = identity.settings.and_then(|c| c.user_tokens.as_ref());
    let Some(names) = names.map(|t| &t.secret) else {
        return Err(ApiError::config(format!(
            "clients.{}.user_tokens is not set.",
            identity.client
        )));
    };
    let secret = |name: &str| env.secret(name).ok().map(|s| s.to_string());
    let secrets = access::signing_keys(identity.client, names, &secret)?;
    Ok(Some(Owner { user, secrets }))
}

/// A call about a stored response.
pub struct Call<'a> {
    /// GET or DELETE.
    pub method: &'a str,
    /// Its id, as the gateway handed it out.
    pub id: &'a str,
    /// About its input items, not the response.
    pub input_items: bool,
    /// The query (with its `?`, or empty), for paging.
    pub query: &'a str,
}

/// Answers `call` for `caller`: a response that is not the caller's (`affinity::Tagged::belongs`)
/// is not found, as one that does not exist.
pub async fn call(
    env: &Env,
    config: &Config,
    caller: Option<&Owner>,
    call: Call<'_>,
) -> Result<Response, ApiError> {
    let Call {
        method,
        id,
        input_items,
        query,
    } = call;
    let not_found = || {
        let mut e = ApiError::new(
            404,
            "invalid_request_error",
            None,
            format!("Response with id '{id}' not found."),
        );
        e.param = Some("response_id".to_string());
        e
    };
    let stored = affinity::untag(id)
        .filter(|t| t.belongs(caller))
        .ok_or_else(not_found)?;
    let upstream_id = stored.upstream_id;
    let accounts = config.accounts.keys().map(String::as_str);
    let account_id = affinity::stored_by(stored.account_tag, accounts).ok_or_else(not_found)?;
    let account = config.accounts.get(account_id).ok_or_else(not_found)?;
    let upstream = config
        .upstreams
        .get(&account.upstream)
        .ok_or_else(not_found)?;
    let tail = if input_items { "/input_items" } else { "" };
    let url = format!("{}/responses/{upstream_id}{tail}{query}", upstream.base_url);
    let mut last = None;
    // The account's keys in turn: a refused one (401) is not the caller's problem.
    for key in account.keys.iter().filter_map(|k| env.secret(k).ok()) {
        let (status, body) = send(method, &url, &key.to_string(), config.default_deadline_ms)
            .await
            .map_err(|_| {
                ApiError::bad_gateway("upstream_error", "The upstream could not be reached.")
            })?;
        if status == 401 {
            last = Some((status, body));
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(classify::passed_through(status, &body));
        }
        // Handed back as the caller named it (sealed for the same user, under the secret that
        // sealed it then, which may since have been replaced).
        let named = affinity::Retag::named(upstream_id, id);
        let body = named.and_then(|r| r.apply(&body)).unwrap_or(body);
        let headers = Headers::new();
        respond::set_header(&headers, "content-type", "application/json");
        return respond::bytes(status, body, headers);
    }
    Err(match last {
        Some((status, body)) => classify::passed_through(status, &body),
        None => ApiError::config(format!(
            "No key of accounts.{account_id}.keys is set as a secret."
        )),
    })
}

/// One call, aborted after `wait_ms`: its status and body.
async fn send(
    method: &str,
    url: &str,
    key: &str,
    wait_ms: u64,
) -> Result<(u16, Vec<u8>), worker::Error> {
    let controller = AbortController::new()?;
    let timer = js::abort_after(&controller, wait_ms.max(1) as f64);
    let answer = JsFuture::from(js::call(method, url, key, &controller.signal())).await;
    js::cancel_timer(&timer);
    let answer: js_sys::Array = answer?.unchecked_into();
    let resp: web_sys::Response = answer.get(0).dyn_into()?;
    let body = answer.get(1).dyn_into::<Uint8Array>()?.to_vec();
    Ok((resp.status(), body))
}
