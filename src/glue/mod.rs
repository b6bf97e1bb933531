//! Workers runtime glue: the fetch entry point; everything here is thin over the pure modules.

mod body;
mod bucket;
mod cache;
mod chat;
mod credits;
mod hold;
mod log;
mod respond;
mod serve;
mod settles;
mod stream;
mod upstream;

use crate::config::Config;
use crate::openai::{self, ApiError};
use crate::routes::{self, Route};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{event, Context, Env, Headers, Request, Response, Result};

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

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let request_id = respond::new_request_id();
    let path = req.path();
    let resp = match handle(req, &env, &ctx, &request_id).await {
        Ok(resp) => resp,
        Err((e, headers)) => {
            let mut resp = respond::error(&e, &path)?;
            for (name, value) in headers.entries() {
                resp.headers_mut().set(&name, &value)?;
            }
            resp
        }
    };
    respond::with_request_id(resp, &request_id)
}

async fn handle(
    req: Request,
    env: &Env,
    ctx: &Context,
    request_id: &str,
) -> std::result::Result<Response, (ApiError, Headers)> {
    let plain = |e: ApiError| (e, Headers::new());
    let method = req.method().to_string();
    let path = req.path();
    match routes::route(&method, &path).map_err(plain)? {
        Route::Health => respond::json(200, r#"{"status":"ok"}"#.to_string()).map_err(plain),
        Route::Models => {
            respond::authorize_client(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            let names = config.models.keys().map(String::as_str);
            respond::json(200, openai::model_list(names)).map_err(plain)
        }
        Route::ChatCompletions => {
            respond::authorize_client(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            chat::complete(req, env, ctx, &config, request_id).await
        }
        Route::AdminBucket { account, model } | Route::AdminClear { account, model } => {
            respond::authorize_admin(&req, env).map_err(plain)?;
            let config = load_config(env).map_err(plain)?;
            let clear = method == "POST";
            bucket::admin(env, &config, &account, &model, clear)
                .await
                .map_err(plain)
        }
    }
}

thread_local! {
    /// The validated config of this isolate: vars change only with a new deployment, which
    /// starts new isolates, so it is read once rather than on every request.
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

/// Reads `GATEWAY` (a `[vars]` table or a JSON string) into a validated config, once per
/// isolate; an invalid config is reported on every request until it is fixed.
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
    let config = Rc::new(Config::from_value(&Value::String(text)).map_err(ApiError::config)?);
    CONFIG.with(|c| *c.borrow_mut() = Some(config.clone()));
    Ok(config)
}
