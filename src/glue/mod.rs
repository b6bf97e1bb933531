//! Workers runtime glue: the fetch entry point; everything here is thin over the pure modules.

mod bucket;
mod chat;
mod respond;

use crate::config::Config;
use crate::openai::{self, ApiError};
use crate::routes::{self, Route};
use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let request_id = respond::new_request_id();
    let path = req.path();
    let resp = match handle(req, &env, &request_id).await {
        Ok(resp) => resp,
        Err(e) => respond::error(&e, &path)?,
    };
    respond::with_request_id(resp, &request_id)
}

async fn handle(
    req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, ApiError> {
    let method = req.method().to_string();
    let path = req.path();
    match routes::route(&method, &path)? {
        Route::Health => respond::json(200, r#"{"status":"ok"}"#.to_string()),
        Route::Models => {
            respond::authorize_client(&req, env)?;
            let config = load_config(env)?;
            respond::json(
                200,
                openai::model_list(config.models.keys().map(String::as_str)),
            )
        }
        Route::ChatCompletions => {
            respond::authorize_client(&req, env)?;
            let config = load_config(env)?;
            chat::complete(req, env, &config, request_id).await
        }
        Route::AdminBucket { account, model } => {
            respond::authorize_admin(&req, env)?;
            bucket::snapshot(env, &account, &model).await
        }
    }
}

/// Reads `GATEWAY` (a `[vars]` table or a JSON string) into a validated config.
fn load_config(env: &Env) -> std::result::Result<Config, ApiError> {
    let raw: serde_json::Value = match env.var("GATEWAY") {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => env.object_var("GATEWAY").map_err(|_| {
            ApiError::config("The GATEWAY variable is missing: see README, Configuration.")
        })?,
    };
    Config::from_value(&raw).map_err(ApiError::config)
}
