//! A gateway deployed with an invalid config: every request is told which field is wrong and
//! where, in OpenAI's shape, with no secret in it (not even one pasted into the config); the
//! health check answers 503 saying why.

use crate::gateway::GatewaySpec;
use crate::support::{
    chat_body, secret_values, sim_config, stat, test_secrets, Ctx, Setup, ADMIN_TOKEN,
    UPSTREAM_KEYS,
};
use crate::Scenario;
use serde_json::json;
use std::sync::Arc;

/// An account whose weight is an upstream key pasted in the wrong place (the first error, and
/// one that must not be repeated), and one whose rpm is a word, not a number.
fn gateway_spec(sim_url: &str) -> GatewaySpec {
    let config = json!({
        "upstreams": {"sim": {"base_url": format!("{sim_url}/compatible-mode/v1"), "profile": "dashscope"}},
        "accounts": {"acct-0": {"upstream": "sim", "keys": ["SIM_KEY_A1"], "weight": UPSTREAM_KEYS[5].1,
                                "limits": {"qwen3-max": {"rpm": 6}}},
                     "acct-a": {"upstream": "sim", "keys": ["SIM_KEY_A1"],
                                "limits": {"qwen3-max": {"rpm": "six"}}}},
        "models": {"qwen3-max": {"fallback": ["qwen3-max"]}}
    });
    GatewaySpec {
        config,
        secrets: test_secrets(),
    }
}

/// The invalid config: nothing to reset (its buckets cannot be named).
pub const MISCONFIGURED: Setup = Setup {
    sim: sim_config,
    gateway: gateway_spec,
    buckets: &[],
    settle_ms: 0,
    fresh_gateway: false,
};

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![(
        "an_invalid_config_is_named_by_field_and_place_on_every_request",
        |c| Box::pin(invalid_config(c)),
    )]
}

async fn invalid_config(ctx: Arc<Ctx>) {
    for _ in 0..2 {
        let reply = ctx.chat(&chat_body("qwen3-max", false)).await;
        assert_eq!(reply.status, 500, "{}", reply.text);
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "gateway_misconfigured", "{}", reply.text);
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "invalid GATEWAY config: accounts.acct-0.weight: invalid type: string \"[redacted]\""
            ) && message.contains(" at line 1 column "),
            "{message}"
        );
        for secret in secret_values() {
            assert!(!reply.text.contains(&secret), "a secret in {}", reply.text);
        }
    }
    // Nothing was sent upstream.
    assert_eq!(stat(&ctx.sim.stats(), &["total_calls"]), 0);
    let health = ctx
        .send(ctx.http.get(format!("{}/healthz", ctx.url())))
        .await;
    // Down for an uptime monitor, saying why.
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.json()["status"], "misconfigured");
    let why = health.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.starts_with("invalid GATEWAY config: accounts.acct-0.weight"),
        "{why}"
    );
    for secret in secret_values() {
        assert!(
            !health.text.contains(&secret),
            "a secret in {}",
            health.text
        );
    }
    // The dashboard's state says the same, which the page shows in place of the tables.
    let url = format!("{}/admin/state", ctx.url());
    let state = ctx.send(ctx.http.get(url).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(
        state.assert_error(500)["message"].as_str(),
        Some(why.as_str())
    );
    // This gateway has no alert webhook: a test alert says how to set one.
    let url = format!("{}/admin/alerts/test", ctx.url());
    let test = ctx.send(ctx.http.post(url).bearer_auth(ADMIN_TOKEN)).await;
    let error = test.assert_error(400);
    assert_eq!(error["code"], "alerts_not_configured", "{}", test.text);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("wrangler secret put ALERT_WEBHOOK_URL"));
}
