//! Helpers shared by the end-to-end tests: configs, a started simulator, request shortcuts.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use upstream_sim::{AccountConfig, AccountState, Limits, SimConfig, Simulator};

pub const DS: &str = "/compatible-mode/v1";
pub const OA: &str = "/v1";

/// One model (`qwen3-max`, plus unlimited `qwen-plus`), accounts acct-a (sk-a1, sk-a2) and
/// acct-b (sk-b1), both with `limits` on qwen3-max.
pub fn config(limits: Limits, time_scale: f64) -> SimConfig {
    let mut c = SimConfig {
        time_scale,
        models: vec!["qwen3-max".into(), "qwen-plus".into()],
        ..SimConfig::default()
    };
    add_account(
        &mut c,
        "acct-a",
        &["sk-a1", "sk-a2"],
        AccountState::Ok,
        limits.clone(),
    );
    add_account(&mut c, "acct-b", &["sk-b1"], AccountState::Ok, limits);
    c
}

pub fn add_account(c: &mut SimConfig, id: &str, keys: &[&str], state: AccountState, l: Limits) {
    let mut limits = BTreeMap::new();
    limits.insert("qwen3-max".to_string(), l);
    c.accounts.insert(
        id.to_string(),
        AccountConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            state,
            limits,
        },
    );
}

pub async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config, 0).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Chat body with one user message "hello" (9 prompt tokens).
pub fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

pub async fn post(sim: &Simulator, prefix: &str, key: &str, body: &Value) -> reqwest::Response {
    post_to(sim, prefix, "chat/completions", key, body).await
}

/// POSTs `body` to `endpoint` (e.g. `responses`) under the dialect's `prefix`.
pub async fn post_to(
    sim: &Simulator,
    prefix: &str,
    endpoint: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .post(format!("{}{prefix}/{endpoint}", sim.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Status and body text of a chat request.
pub async fn call(sim: &Simulator, prefix: &str, key: &str, body: &Value) -> (u16, String) {
    let resp = post(sim, prefix, key, body).await;
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Every chunk of a body as it arrived, and the error that ended it, if any.
pub async fn chunks(mut resp: reqwest::Response) -> (Vec<String>, Option<reqwest::Error>) {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => out.push(String::from_utf8(c.to_vec()).unwrap()),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// The model stats of an account.
pub fn model_stats(sim: &Simulator, account: &str, model: &str) -> Value {
    sim.stats()["accounts"][account]["models"][model].clone()
}

/// `request_id` of a JSON body.
pub fn request_id(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["request_id"].as_str().unwrap().to_string()
}
