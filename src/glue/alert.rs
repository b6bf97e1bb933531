//! Sends an operator alert (`crate::alert`) to the webhook in the `ALERT_WEBHOOK_URL` secret, in
//! the background, from the Durable Object that saw the change (so each is sent once); nothing
//! when the secret is not set. A receiver that is down or busy is tried twice more; a send that
//! fails is logged, never with the URL (a credential).

use crate::alert::Alert;
use crate::glue::{js, log};
use crate::openai::ApiError;
use serde_json::json;
use std::time::Duration;
use worker::wasm_bindgen_futures::{spawn_local, JsFuture};
use worker::{Delay, Env};

/// The secret holding the webhook's URL (a Slack incoming webhook, or any receiver of JSON).
pub const SECRET: &str = "ALERT_WEBHOOK_URL";

/// How long the receiver has to answer each try.
const TIMEOUT_MS: f64 = 10_000.0;

/// The waits before the second and the third try.
const RETRY_AFTER_MS: [u64; 2] = [2_000, 10_000];

/// Sends `alert` if a webhook is set.
pub fn send(env: &Env, alert: Alert) {
    let Ok(url) = env.secret(SECRET) else {
        return;
    };
    let url = url.to_string();
    spawn_local(async move {
        let body = &alert.body;
        let mut status = post(&url, body).await;
        for wait in RETRY_AFTER_MS {
            // No answer, too busy, or failing: worth another try; any other refusal is not.
            if !(status == 0 || status == 429 || status >= 500) {
                break;
            }
            Delay::from(Duration::from_millis(wait)).await;
            status = post(&url, body).await;
        }
        let answer = match status {
            200..=299 => return,
            0 => json!("none"),
            status => json!(status),
        };
        let fields = json!({"alert": alert.event, "answer": answer});
        log::warn("alert_failed", "", fields);
    });
}

/// Sends `alert` once, now, for an operator who asked (`POST /admin/alerts/test`): the
/// receiver's status, or why it was not delivered.
pub async fn send_now(env: &Env, alert: Alert) -> Result<u16, ApiError> {
    let Ok(url) = env.secret(SECRET) else {
        let message = format!("No alert webhook is set: put its URL in the secret {SECRET} (`wrangler secret put {SECRET}`), then test again.");
        return Err(ApiError::new(
            400,
            "invalid_request_error",
            Some("alerts_not_configured"),
            message,
        ));
    };
    match post(&url.to_string(), &alert.body).await {
        status @ 200..=299 => Ok(status),
        0 => Err(not_delivered(
            "did not answer within 10 s, or could not be reached".into(),
        )),
        status => Err(not_delivered(format!("answered {status}"))),
    }
}

fn not_delivered(what: String) -> ApiError {
    let message = format!("The alert webhook {what}: nothing was delivered.");
    ApiError::new(502, "server_error", Some("alert_not_delivered"), message)
}

/// One try: the answer's status, 0 for none.
async fn post(url: &str, body: &str) -> u16 {
    let answer = JsFuture::from(js::notify(url, body, TIMEOUT_MS)).await;
    answer.ok().and_then(|s| s.as_f64()).unwrap_or(0.0) as u16
}
