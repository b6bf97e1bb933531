//! Workers runtime glue: the fetch entry point; everything here is thin over the pure modules.

mod admin;
mod alert;
mod body;
mod bucket;
mod cache;
mod chat;
mod credits;
mod history;
mod hold;
mod js;
mod log;
mod meter;
mod objects;
mod respond;
mod serve;
mod settles;
mod stored;
mod stream;
mod turns;
mod upstream;

use crate::access::cors::{self, Judged};
use crate::access::{self, Identity, Keyring};
use crate::config::{Config, ModelRoute, UnsetKeys};
use crate::openai::{self, ApiError};
use crate::routes::{self, Route};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::{event, web_sys, Context, Env, Headers, Response, Result};

/// Unix ms now: the runtime's `Date.now()` (the worker crate's `Date::now` builds a JS `Date`
/// object per call, and the request path reads the clock a dozen times).
pub fn now_ms() -> u64 {
    // A float-to-int `as` saturates: never a panic.
    js_sys::Date::now() as u64
}

/// A panic aborts the instance: say where first, as a log line (never a value: the message
/// names the place, not the data).
#[event(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::warn("panic", "", serde_json::json!({ "at": place }));
    }));
}

/// The Worker's fetch handler, as `#[event(fetch)]` would export it, with two differences: it
/// takes the runtime's Request as it is (the worker crate's `Request` would read its `cf`, which
/// the runtime builds on first read, method, URL and headers into Rust up front), and it keeps
/// the runtime's context object beside the worker crate's (the client watchdog hands it its
/// promise: `hold::watch`).
#[wasm_bindgen(
    wasm_bindgen = worker::wasm_bindgen,
    wasm_bindgen_futures = worker::wasm_bindgen_futures
)]
pub async fn fetch(
    req: web_sys::Request,
    env: Env,
    ctx: worker::worker_sys::Context,
) -> std::result::Result<JsValue, JsValue> {
    let js_ctx = JsValue::from(&ctx);
    let answer = match answer(req, env, Context::new(ctx), &js_ctx).await {
        Ok(resp) => Ok(resp),
        // A runtime failure building the answer: logged, and still an OpenAI-shaped 500.
        Err(e) => {
            log::warn(
                "answer_failed",
                "",
                serde_json::json!({ "error": e.to_string() }),
            );
            respond::error(&respond::internal(e), "")
        }
    };
    Ok(web_sys::Response::from(answer.map_err(JsValue::from)?).into())
}

/// Routes, handles and answers one request.
async fn answer(
    req: web_sys::Request,
    env: Env,
    ctx: Context,
    js_ctx: &JsValue,
) -> Result<Response> {
    let request_id = respond::new_request_id();
    let url = req.url();
    let path = &routes::api_path(routes::path_of(&url));
    let origin = respond::header(&req, "origin");
    let mut cors = Cors {
        origin: origin.as_deref(),
        allowed: false,
    };
    let resp = match handle(req, path, &env, (&ctx, js_ctx), &request_id, &mut cors).await {
        Ok(resp) => resp,
        Err((e, headers)) => {
            let mut resp = respond::error(&e, path)?;
            for (name, value) in headers.entries() {
                resp.headers_mut().set(&name, &value)?;
            }
            resp
        }
    };
    let mut resp = respond::with_request_id(resp, &request_id)?;
    if let (Some(origin), true) = (cors.origin, cors.allowed) {
        for (name, value) in cors::response_headers(origin) {
            resp.headers_mut().set(name, &value)?;
        }
    }
    Ok(resp)
}

/// The request's `Origin` and whether its answer may be read there: by the caller's client
/// once known, before that by any client (so a browser app can read why it was refused).
struct Cors<'a> {
    origin: Option<&'a str>,
    allowed: bool,
}

async fn handle(
    req: web_sys::Request,
    path: &str,
    env: &Env,
    (ctx, js_ctx): (&Context, &JsValue),
    request_id: &str,
    cors: &mut Cors<'_>,
) -> std::result::Result<Response, (ApiError, Headers)> {
    let plain = |e: ApiError| (e, Headers::new());
    let method = req.method();
    match routes::route(&method, path).map_err(plain)? {
        // Ready when its config is valid: an uptime monitor sees a gateway whose every call
        // would answer 500 (its `[vars]` edited on the dashboard, say) as down, and why.
        Route::Health => match load_config(env) {
            Ok(_) => respond::json(200, r#"{"status":"ok"}"#.to_string()).map_err(plain),
            Err(e) => {
                let body = serde_json::json!({"status": "misconfigured", "message": e.message});
                respond::json(503, body.to_string()).map_err(plain)
            }
        },
        Route::Preflight => {
            let config = load_config(env).map_err(plain)?;
            let origin = cors.origin.filter(|o| cors::any_client_allows(&config, o));
            let Some(origin) = origin else {
                return Err(plain(origin_refused(cors.origin)));
            };
            let requested = respond::header(&req, "access-control-request-headers");
            let headers = Headers::new();
            for (name, value) in cors::preflight_headers(origin, requested.as_deref()) {
                respond::set_header(&headers, name, &value);
            }
            Ok(Response::empty()
                .map_err(|e| plain(respond::internal(e)))?
                .with_status(204)
                .with_headers(headers))
        }
        Route::Models => {
            let config = load_config(env).map_err(plain)?;
            let identity = authenticate(&req, env, &config, cors).map_err(plain)?;
            let models = config.models.iter();
            let names = models.filter(|(m, route)| callable(&config, &identity, m, route).is_ok());
            respond::json(200, openai::model_list(names.map(|(m, _)| m.as_str()))).map_err(plain)
        }
        Route::Usage => {
            let config = load_config(env).map_err(plain)?;
            let identity = authenticate(&req, env, &config, cors).map_err(plain)?;
            meter::caller_usage(env, &config, &identity)
                .await
                .map_err(plain)
        }
        Route::Model { id } => {
            let config = load_config(env).map_err(plain)?;
            let identity = authenticate(&req, env, &config, cors).map_err(plain)?;
            // As a chat request naming it would be answered.
            let route = (config.models.get(&id)).ok_or_else(|| ApiError::model_not_found(&id));
            callable(&config, &identity, &id, route.map_err(plain)?).map_err(plain)?;
            respond::json(200, openai::model_object(&id).to_string()).map_err(plain)
        }
        Route::Stored { id, input_items } => {
            let config = load_config(env).map_err(plain)?;
            let identity = authenticate(&req, env, &config, cors).map_err(plain)?;
            let url = req.url();
            let query = routes::query_of(&url);
            let owner = stored::owner(env, &identity).map_err(plain)?;
            let call = stored::Call {
                method: &method,
                id: &id,
                input_items,
                query,
            };
            stored::call(env, &config, owner.as_ref(), call)
                .await
                .map_err(plain)
        }
        Route::Call(endpoint) => {
            let config = load_config(env).map_err(plain)?;
            let identity = authenticate(&req, env, &config, cors).map_err(plain)?;
            chat::complete(
                req,
                endpoint,
                env,
                (ctx, js_ctx),
                &config,
                &identity,
                request_id,
            )
            .await
        }
        Route::AdminBucket {
            account,
            model,
            clear,
        } => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            bucket::admin(env, &config, &account, model.as_deref(), clear)
                .await
                .map_err(plain)
        }
        Route::AdminDashboard => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            admin::dashboard().map_err(plain)
        }
        Route::AdminState => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            admin::state(env, &config).await.map_err(plain)
        }
        Route::AdminMetrics => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            admin::metrics(env, &config).await.map_err(plain)
        }
        Route::AdminReport => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            admin::report(&req, env, &config).await.map_err(plain)
        }
        Route::AdminAlertTest => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let test = crate::alert::test(now_ms());
            let answer = alert::send_now(env, test).await.map_err(plain)?;
            let body = format!(r#"{{"sent":true,"answer":{answer}}}"#);
            respond::json(200, body).map_err(plain)
        }
        Route::AdminClient {
            client,
            user,
            reset,
        } => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            meter::admin(env, &config, &client, user.as_deref(), reset)
                .await
                .map_err(plain)
        }
    }
}

/// Who is calling: a browser request from an origin its client does not list is refused
/// before anything is spent (see `cors::judge`).
fn authenticate<'a>(
    req: &web_sys::Request,
    env: &Env,
    config: &'a Config,
    cors: &mut Cors<'_>,
) -> std::result::Result<Identity<'a>, ApiError> {
    cors.allowed = cors
        .origin
        .is_some_and(|o| cors::any_client_allows(config, o));
    let secret = |name: &str| env.secret(name).ok().map(|s| s.to_string());
    let keyring = KEYRING.with(|k| k.borrow().clone()).unwrap_or_else(|| {
        let keyring = Rc::new(Keyring::new(config, &secret));
        KEYRING.with(|k| *k.borrow_mut() = Some(keyring.clone()));
        keyring
    });
    let bearer = respond::bearer(req);
    let now_s = now_ms() / 1_000;
    let identity = access::authenticate(config, &keyring, bearer.as_deref(), &secret, now_s)?;
    if let Some(origin) = cors.origin {
        match cors::judge(identity.origins(), origin) {
            Judged::Readable => {}
            Judged::Unreadable => cors.allowed = false,
            // Refused, the answer stays readable where some client allows the origin, so the
            // page can say why.
            Judged::Refused => return Err(origin_refused(Some(origin))),
        }
    }
    Ok(identity)
}

/// 403 for a browser origin no client (or not the caller's client) allows.
fn origin_refused(origin: Option<&str>) -> ApiError {
    let origin: String = origin
        .unwrap_or("(none)")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect();
    let mut e = ApiError::new(
        403,
        "permission_error",
        Some("origin_not_allowed"),
        format!("The origin {origin} may not call this gateway with this credential (see the client's `origins`)."),
    );
    e.should_retry = Some(false);
    e
}

thread_local! {
    /// The validated config of this isolate: vars change only with a new deployment, which
    /// starts new isolates, so it is read once rather than on every request.
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
    /// The digests of the keys that may call, worked out with the config (secrets, too,
    /// change only with a new deployment).
    static KEYRING: RefCell<Option<Rc<Keyring>>> = const { RefCell::new(None) };
    /// The account keys the config left out, their secret not set (checked with the config).
    static UNSET_KEYS: RefCell<UnsetKeys> = const { RefCell::new(Vec::new()) };
}

/// The account keys left out of this isolate's config, their secret not set: (account, secret).
pub fn unset_keys() -> UnsetKeys {
    UNSET_KEYS.with(|u| u.borrow().clone())
}

/// Whether `identity` may call `model` (routed by `route`) and some account with a key set can
/// serve it: the model list's test, and the answer when not (a refusal, or what to set).
fn callable(
    config: &Config,
    identity: &Identity,
    model: &str,
    route: &ModelRoute,
) -> std::result::Result<(), ApiError> {
    if !identity.may_call(model) {
        return Err(identity.model_refused(model));
    }
    if !config.can_serve(route) {
        return Err(ApiError::config(config.no_key_set(route, &unset_keys())));
    }
    Ok(())
}

/// Reads `GATEWAY` (a `[vars]` table or a JSON string) into a validated config, once per
/// isolate, leaving out account keys whose secret is not set; an invalid config is reported
/// on every request until it is fixed.
fn load_config(env: &Env) -> std::result::Result<Rc<Config>, ApiError> {
    if let Some(config) = CONFIG.with(|c| c.borrow().clone()) {
        return Ok(config);
    }
    // A `[vars]` table arrives as a JS object: it is read as JSON text, like a string var, so
    // one deserialiser reads the config (through serde_wasm_bindgen would be a second copy).
    let text = match env.var("GATEWAY") {
        Ok(text) => Some(text.to_string()),
        Err(_) => js_sys::Reflect::get(env, &"GATEWAY".into())
            .ok()
            .filter(JsValue::is_object)
            .and_then(|table| js_sys::JSON::stringify(&table).ok())
            .and_then(|json| json.as_string()),
    };
    let text = text.ok_or_else(|| {
        ApiError::config("The GATEWAY variable is missing: see README, Configuration.")
    })?;
    let mut config = Config::from_text(&text).map_err(ApiError::config)?;
    // Secrets change only with a deployment, which starts new isolates: checked once here.
    let unset = config.leave_out_unset_keys(|name| env.secret(name).is_ok());
    if !unset.is_empty() {
        log::warn("secrets_not_set", "", serde_json::json!({ "keys": unset }));
    }
    UNSET_KEYS.with(|u| *u.borrow_mut() = unset);
    let config = Rc::new(config);
    CONFIG.with(|c| *c.borrow_mut() = Some(config.clone()));
    Ok(config)
}
