//! First scenarios: proxying, request checks, upstream failures, the Durable Object counter, secrecy.

use crate::support::{
    chat_body, counters, eventually, stat, Ctx, ADMIN_TOKEN, APP_B_KEY, CLIENT_KEY, UPSTREAM_KEYS,
};
use crate::Scenario;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("proxied_success_is_the_upstream_answer", |c| {
            Box::pin(proxied_success(c))
        }),
        ("stream_passes_through_as_sse", |c| {
            Box::pin(stream_passes_through(c))
        }),
        ("invalid_json_is_a_400_in_openai_shape", |c| {
            Box::pin(invalid_json(c))
        }),
        ("missing_fields_are_400s_naming_the_field", |c| {
            Box::pin(missing_fields(c))
        }),
        ("unknown_route_404_and_wrong_method_405", |c| {
            Box::pin(routes(c))
        }),
        ("client_key_is_required", |c| {
            Box::pin(client_key_required(c))
        }),
        ("unknown_model_is_a_404", |c| Box::pin(unknown_model(c))),
        ("embeddings_are_served_counted_and_never_downgraded", |c| {
            Box::pin(embeddings(c))
        }),
        ("upstream_500_is_retried_then_an_openai_shaped_502", |c| {
            Box::pin(upstream_500(c))
        }),
        ("upstream_connection_reset_becomes_a_502", |c| {
            Box::pin(upstream_reset(c))
        }),
        ("revoked_upstream_key_never_reaches_the_client", |c| {
            Box::pin(revoked_key(c))
        }),
        ("revoked_key_is_skipped_for_the_accounts_other_key", |c| {
            Box::pin(other_key(c))
        }),
        ("a_key_whose_secret_is_not_set_is_never_sent", |c| {
            Box::pin(unset_secret(c))
        }),
        ("durable_object_counts_requests", |c| {
            Box::pin(do_counter(c))
        }),
        ("models_and_health", |c| Box::pin(models_and_health(c))),
        ("no_secret_in_gateway_logs", |c| {
            Box::pin(no_secret_in_logs(c))
        }),
    ]
}

async fn proxied_success(ctx: Arc<Ctx>) {
    let body = json!({"model": "qwen3-max", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 5, "temperature": 0.2});
    let reply = ctx.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let got = reply.json();
    assert_eq!(got["model"], "qwen3-max");
    assert_eq!(
        got["usage"]["completion_tokens"], 5,
        "max_tokens reached the upstream"
    );
    // Priced at the configured first tier: $1.20 / $6.00 per 1M input / output tokens.
    let prompt = got["usage"]["prompt_tokens"].as_f64().unwrap();
    let cost = format!("{:.6}", (prompt * 1.2 + 5.0 * 6.0) / 1e6);
    assert_eq!(reply.header("x-gateway-cost-usd"), cost);
    assert_eq!(reply.header("x-gateway-served-model"), "qwen3-max");
    assert_eq!(reply.header("x-gateway-requested-model"), "qwen3-max");
    assert_eq!(reply.header("x-gateway-upstream"), "sim");
    assert!(reply.header("x-request-id").starts_with("gw-"));

    // Unchanged: the same request straight to the simulator gives the same answer but for ids.
    let direct: Value = ctx
        .http
        .post(format!(
            "{}/compatible-mode/v1/chat/completions",
            ctx.sim.url()
        ))
        .bearer_auth("sk-a1")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let strip = |mut v: Value| {
        v["id"] = Value::Null;
        v["created"] = Value::Null;
        v
    };
    assert_eq!(strip(got), strip(direct));
    assert_eq!(
        ctx.sim.stats()["keys"]["sk-a1"]["calls"],
        2,
        "gateway used acct-a's first key"
    );
}

async fn stream_passes_through(ctx: Arc<Ctx>) {
    let reply = ctx.chat(&chat_body("qwen3-max", true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply
        .header("content-type")
        .starts_with("text/event-stream"));
    assert_eq!(reply.header("x-gateway-served-model"), "qwen3-max");
    let events: Vec<&str> = reply.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{}", reply.text);
    let first: Value = serde_json::from_str(events[0].trim_start_matches("data: ")).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(
        events.len() >= 4,
        "role, content and finish chunks: {}",
        reply.text
    );
}

async fn invalid_json(ctx: Arc<Ctx>) {
    let reply = ctx
        .send(
            ctx.http
                .post(format!("{}/v1/chat/completions", ctx.url()))
                .bearer_auth(CLIENT_KEY)
                .header("content-type", "application/json")
                .body("{\"model\": \"qwen3-max\", \"messages\": ["),
        )
        .await;
    let error = reply.assert_error(400);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(reply.header("x-should-retry"), "false");
    assert_eq!(
        ctx.sim.stats()["total_calls"],
        0,
        "nothing reached the upstream"
    );
}

async fn missing_fields(ctx: Arc<Ctx>) {
    for (body, param) in [
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
        (json!({"model": "qwen3-max"}), "messages"),
        (json!({"model": "qwen3-max", "messages": []}), "messages"),
    ] {
        let error = ctx.chat(&body).await.assert_error(400);
        assert_eq!(error["param"], param, "{body}");
    }
    assert_eq!(ctx.sim.stats()["total_calls"], 0);
}

async fn routes(ctx: Arc<Ctx>) {
    let reply = ctx
        .send(ctx.http.get(format!("{}/v1/nothing-here", ctx.url())))
        .await;
    assert_eq!(reply.assert_error(404)["code"], "unknown_url");
    let reply = ctx
        .send(
            ctx.http
                .get(format!("{}/v1/chat/completions", ctx.url()))
                .bearer_auth(CLIENT_KEY),
        )
        .await;
    assert_eq!(reply.assert_error(405)["code"], "method_not_allowed");
    assert_eq!(reply.header("allow"), "POST, OPTIONS");
}

async fn client_key_required(ctx: Arc<Ctx>) {
    let url = format!("{}/v1/chat/completions", ctx.url());
    let missing = ctx
        .send(ctx.http.post(&url).json(&chat_body("qwen3-max", false)))
        .await;
    assert_eq!(missing.assert_error(401)["code"], "invalid_api_key");
    let wrong = ctx
        .send(
            ctx.http
                .post(&url)
                .bearer_auth("gw-test-client-kez")
                .json(&chat_body("qwen3-max", false)),
        )
        .await;
    wrong.assert_error(401);
    let other = ctx
        .send(
            ctx.http
                .post(&url)
                .bearer_auth("other-key")
                .json(&chat_body("qwen3-max", false)),
        )
        .await;
    assert_eq!(
        other.status, 200,
        "every listed key is accepted: {}",
        other.text
    );
    assert_eq!(ctx.sim.stats()["total_calls"], 1);
}

async fn unknown_model(ctx: Arc<Ctx>) {
    let error = ctx
        .chat(&chat_body("gpt-17", false))
        .await
        .assert_error(404);
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    assert_eq!(ctx.sim.stats()["total_calls"], 0);
}

async fn upstream_500(ctx: Arc<Ctx>) {
    // One 500 is retried on the same account and the client never sees it.
    ctx.sim
        .push_fault(json!({"kind": "status", "status": 500}))
        .unwrap();
    let reply = ctx.chat(&chat_body("qwen3-max", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-attempts"), "2");

    // An upstream that keeps failing ends in an OpenAI-shaped 502, after bounded retries.
    ctx.sim
        .push_fault(json!({"kind": "status", "status": 500, "times": 0}))
        .unwrap();
    let reply = ctx.chat(&chat_body("qwen3-max", false)).await;
    let error = reply.assert_error(502);
    assert_eq!(error["type"], "upstream_error");
    let attempts: u64 = reply.header("x-gateway-attempts").parse().unwrap();
    assert!((3..=8).contains(&attempts), "bounded: {attempts}");
    assert_eq!(ctx.sim.stats()["total_calls"], attempts + 2);
}

async fn upstream_reset(ctx: Arc<Ctx>) {
    ctx.sim
        .push_fault(json!({"kind": "reset", "times": 0}))
        .unwrap();
    let reply = ctx.chat(&chat_body("qwen3-max", false)).await;
    assert_eq!(reply.assert_error(502)["type"], "upstream_error");
}

async fn revoked_key(ctx: Arc<Ctx>) {
    let reply = ctx.chat(&chat_body("revoked", false)).await;
    let error = reply.assert_error(429);
    assert_eq!(error["code"], "upstreams_parked");
    assert_eq!(
        reply.header("x-should-retry"),
        "false",
        "retrying cannot help"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("invalid_api_key"),
        "{error}"
    );
    let everything = format!("{:?} {}", reply.headers, reply.text);
    for (_, key) in UPSTREAM_KEYS {
        assert!(
            !everything.contains(key),
            "upstream key leaked: {everything}"
        );
    }
    assert!(
        !everything.contains("sk-re"),
        "not even the masked key: {everything}"
    );
    // The key is parked: the next request does not reach the upstream.
    ctx.chat(&chat_body("revoked", false))
        .await
        .assert_error(429);
    assert_eq!(ctx.sim.stats()["unauthorized"], 1, "{}", ctx.sim.stats());
}

async fn other_key(ctx: Arc<Ctx>) {
    for i in 0..6 {
        let reply = ctx.chat(&chat_body("keys-test", false)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
    }
    assert_eq!(
        ctx.sim.stats()["unauthorized"],
        1,
        "the revoked key was tried once, then skipped"
    );
    assert_eq!(ctx.sim.stats()["keys"]["sk-c1"]["calls"], 6);
    let view = ctx.bucket("acct-keys", "qwen-turbo").await;
    assert_eq!(view["refused_keys"], json!(["SIM_KEY_REVOKED"]), "{view}");
    assert_eq!(
        view["state"]["parked"],
        Value::Null,
        "the account still serves: {view}"
    );
    // Its operator is told at the webhook, once, which secret to replace.
    let alert = ctx.alert_once("bucket_key_refused", &[("account", "acct-keys")]);
    assert_eq!(alert.await["keys"], json!(["SIM_KEY_REVOKED"]));
    let url = format!("{}/admin/buckets/acct-keys/qwen-turbo/clear", ctx.url());
    let cleared = ctx
        .send(ctx.http.post(url).bearer_auth(ADMIN_TOKEN))
        .await
        .json();
    assert_eq!(
        cleared["refused_keys"],
        json!([]),
        "an operator who replaced the key clears it"
    );
}

/// A key whose secret this deployment does not set (a forgotten `wrangler secret put`) is
/// never sent: its account's other key serves, an account with none is passed over, and a
/// model no account with a key serves says which secrets to set. The operator sees them.
async fn unset_secret(ctx: Arc<Ctx>) {
    // acct-unset (no key set) and acct-half (one of its two set), of equal weight.
    for i in 0..6 {
        let reply = ctx.chat(&chat_body("unset-test", false)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
        assert_eq!(
            reply.header("x-gateway-attempts"),
            "1",
            "{:?}",
            reply.headers
        );
    }
    assert_eq!(
        ctx.sim.stats()["keys"]["sk-c1"]["calls"],
        6,
        "acct-half's set key served all"
    );
    // A chain whose first step has no account with a key goes down it, saying why.
    let reply = ctx.chat(&chat_body("unset-first", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-served-model"), "qwen-turbo");
    assert_eq!(
        reply.header("x-gateway-fallback-reason"),
        "qwen3-max:unavailable"
    );
    // A model no account with a key serves: the operator's to fix, naming the secret only.
    let calls = stat(&ctx.sim.stats(), &["total_calls"]);
    let reply = ctx.chat(&chat_body("unset-only", false)).await;
    let error = reply.assert_error(500);
    assert_eq!(error["code"], "gateway_misconfigured", "{}", reply.text);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("set SIM_KEY_UNSET (accounts.acct-unset.keys)"),
        "{error}"
    );
    assert_eq!(
        stat(&ctx.sim.stats(), &["total_calls"]),
        calls,
        "nothing sent"
    );
    // The operator hears which secrets to set, once (within the hour) however many fail.
    let first = [("account", "acct-unset"), ("model", "qwen-turbo")];
    let alert = ctx.alert_once("clients_failed_no_key", &first).await;
    assert_eq!(alert["keys"], json!(["SIM_KEY_UNSET"]), "{alert}");
    let again = ctx.chat(&chat_body("unset-only", false)).await;
    again.assert_error(500);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ctx.alerts_about("clients_failed_no_key", &first).len(), 1);
    // Nor is it offered: the model list leaves it out (models_and_health), and asked for by
    // name it answers as the call would.
    let url = format!("{}/v1/models/unset-only", ctx.url());
    let retrieved = ctx.send(ctx.http.get(url).bearer_auth(CLIENT_KEY)).await;
    assert_eq!(
        retrieved.assert_error(500)["message"],
        error["message"],
        "{}",
        retrieved.text
    );
    // Told in the log when the config is read, and on the dashboard's state.
    assert!(
        ctx.gateway_log().contains(r#""secrets_not_set""#),
        "{}",
        ctx.gateway_log()
    );
    let state = ctx
        .send(
            ctx.http
                .get(format!("{}/admin/state", ctx.url()))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await
        .json();
    let bucket = |account: &str| {
        let buckets = state["buckets"].as_array().unwrap().iter();
        let mut found = buckets.filter(|b| b["account"] == account && b["model"] == "qwen-turbo");
        found.next().unwrap().clone()
    };
    let (unset, half) = (bucket("acct-unset"), bucket("acct-half"));
    assert_eq!(
        (&unset["unset_keys"], &unset["keys_set"]),
        (&json!(["SIM_KEY_UNSET"]), &json!(0))
    );
    assert_eq!(
        (&half["unset_keys"], &half["keys_set"]),
        (&json!(["SIM_KEY_UNSET"]), &json!(1))
    );
}

async fn do_counter(ctx: Arc<Ctx>) {
    let admitted = |v: Value| v["state"]["counters"]["admitted"].as_u64().unwrap();
    let mut before = 0;
    for account in ["acct-a", "acct-b", "acct-c"] {
        before += admitted(ctx.bucket(account, "qwen3-max").await);
    }
    let turbo_before = admitted(ctx.bucket("acct-burst", "qwen-turbo").await);
    for _ in 0..3 {
        assert_eq!(ctx.chat(&chat_body("qwen3-max", false)).await.status, 200);
    }
    let mut after = 0;
    for account in ["acct-a", "acct-b", "acct-c"] {
        after += admitted(ctx.bucket(account, "qwen3-max").await);
    }
    assert_eq!(after, before + 3, "each request took exactly one admission");
    let mut cost = 0;
    for _ in 0..30 {
        cost = 0;
        for account in ["acct-a", "acct-b", "acct-c"] {
            let v = ctx.bucket(account, "qwen3-max").await;
            cost += v["state"]["counters"]["cost_micro_usd"]
                .as_u64()
                .unwrap_or(0);
        }
        if cost > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(cost > 0, "the buckets count what the requests cost");
    let turbo_after = admitted(ctx.bucket("acct-burst", "qwen-turbo").await);
    assert_eq!(
        turbo_after, turbo_before,
        "one DO per bucket: others untouched"
    );
    let no_token = ctx
        .send(
            ctx.http
                .get(format!("{}/admin/buckets/acct-a/qwen3-max", ctx.url())),
        )
        .await;
    no_token.assert_error(401);
    let client_key = ctx
        .send(
            ctx.http
                .get(format!("{}/admin/buckets/acct-a/qwen3-max", ctx.url()))
                .bearer_auth(CLIENT_KEY),
        )
        .await;
    client_key.assert_error(401);
}

async fn models_and_health(ctx: Arc<Ctx>) {
    let models = ctx
        .send(
            ctx.http
                .get(format!("{}/v1/models", ctx.url()))
                .bearer_auth(CLIENT_KEY),
        )
        .await;
    assert_eq!(models.status, 200);
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "abandon-test",
            "burst-test",
            "cache-test",
            "chat-first",
            "chat-only",
            "choices-test",
            "client-test",
            "follow-test",
            "keys-test",
            "keys4-test",
            "long-stream",
            "prompts-test",
            "qwen-turbo-direct",
            "qwen3-max",
            "relay-test",
            "revoked",
            "room-test",
            "rotate-test",
            "stream-test",
            "text-embedding-v4",
            "unset-first",
            "unset-test",
            "write-test"
        ]
    );
    // The SDKs' `models.retrieve`: one model as the list shows it, an unknown one 404, one
    // the client may not call refused as a chat request naming it would be. Then a client
    // that changed only the host of DashScope's base_url, one with the bare host, and one
    // with a base_url of another path, told what to set.
    let retrieve = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
print(client.models.retrieve("qwen3-max").to_json(indent=None))
try:
    client.models.retrieve("no-such-model")
except openai.NotFoundError as e:
    print(e.body["code"])
for base in ["/compatible-mode/v1", ""]:
    moved = openai.OpenAI(base_url=sys.argv[1] + base, api_key=sys.argv[2], max_retries=0)
    reply = moved.chat.completions.create(model="qwen3-max", messages=[{"role": "user", "content": "hi"}])
    print(base or "bare", reply.object)
try:
    openai.OpenAI(base_url=sys.argv[1] + "/api", api_key=sys.argv[2], max_retries=0).models.list()
except openai.NotFoundError as e:
    print(e.body["message"])
"#;
    let stdout = ctx.sdk(retrieve);
    let mut lines = stdout.lines();
    let model: Value = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        model,
        models.json()["data"][ids.iter().position(|m| m == "qwen3-max").unwrap()]
    );
    assert_eq!(lines.next(), Some("model_not_found"), "{stdout}");
    assert_eq!(
        lines.next(),
        Some("/compatible-mode/v1 chat.completion"),
        "{stdout}"
    );
    assert_eq!(lines.next(), Some("bare chat.completion"), "{stdout}");
    assert_eq!(
        lines.next(),
        Some("Unrecognized request URL (GET /api/models). The gateway serves OpenAI's API under /v1: set your SDK's base_url to this host followed by /v1."),
        "{stdout}"
    );
    let refused = ctx
        .send(
            ctx.http
                .get(format!("{}/v1/models/qwen3-max", ctx.url()))
                .bearer_auth(APP_B_KEY),
        )
        .await;
    assert_eq!(refused.assert_error(403)["code"], "model_not_allowed");
    let health = ctx
        .send(ctx.http.get(format!("{}/healthz", ctx.url())))
        .await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
}

async fn no_secret_in_logs(ctx: Arc<Ctx>) {
    // Drive a success and a failure so the log has something to say, then read it all.
    ctx.chat(&chat_body("qwen3-max", false)).await;
    ctx.chat(&chat_body("revoked", false)).await;
    let log = ctx.gateway_log();
    assert!(log.contains("Ready on"), "the log was captured");
    for secret in UPSTREAM_KEYS
        .iter()
        .map(|(_, v)| *v)
        .chain([CLIENT_KEY, ADMIN_TOKEN])
    {
        assert!(
            !log.contains(secret),
            "secret {secret:?} appears in the gateway log"
        );
    }
}

async fn embeddings(ctx: Arc<Ctx>) {
    // Through the official SDK, as a RAG app calls it beside its chat.
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
r = client.embeddings.create(model="text-embedding-v4", input=["Say hello", "bonjour"], dimensions=4)
print(len(r.data), len(r.data[1].embedding), r.model, r.usage.prompt_tokens)
"#;
    assert_eq!(ctx.sdk(script).trim(), "2 4 text-embedding-v4 5");
    let send = |input: Value| {
        let ctx = ctx.clone();
        async move {
            let body = json!({"model": "text-embedding-v4", "input": input});
            ctx.send(
                ctx.http
                    .post(format!("{}/v1/embeddings", ctx.url()))
                    .bearer_auth(CLIENT_KEY)
                    .json(&body),
            )
            .await
        }
    };
    let bad = send(json!([])).await;
    assert_eq!(bad.assert_error(400)["param"], "input");
    // 6 a minute upstream, 9 asked: what does not fit is refused with an honest Retry-After,
    // never answered by the free chat model after it in the chain.
    let replies =
        futures_util::future::join_all((0..8).map(|i| send(json!(format!("text {i}"))))).await;
    let mut served = 1;
    for r in &replies {
        match r.status {
            200 => {
                served += 1;
                assert_eq!(r.header("x-gateway-served-model"), "text-embedding-v4");
                assert_eq!(r.json()["data"][0]["object"], "embedding");
            }
            429 => {
                r.assert_error(429);
                assert!(r.header("retry-after").parse::<u64>().is_ok(), "{}", r.text);
            }
            other => panic!("status {other}: {}", r.text),
        }
    }
    // The burst alone is more than a minute's 6, wherever the window stands.
    assert!((2..=7).contains(&served), "served {served} of 9");
    let upstream = ctx.sim_model("acct-embed", "text-embedding-v4");
    assert_eq!(upstream["ok"].as_u64(), Some(served), "{upstream}");
    assert_eq!(upstream["over_limit"].as_u64(), Some(0), "{upstream}");
    let counted = eventually(10, || async {
        let c = counters(&ctx, "acct-embed", "text-embedding-v4").await;
        stat(&c, &["prompt_tokens"]) == upstream["prompt_tokens"].as_u64().unwrap_or(0)
            && stat(&c, &["completion_tokens"]) == 0
    })
    .await;
    assert!(
        counted,
        "the gateway counts the upstream's tokens: {upstream}"
    );
    // Its operator is told, once (at most once an hour), that clients were refused for want
    // of capacity, with where to look.
    let alert = ctx.alert_once("clients_refused", &[("account", "acct-embed")]);
    let text = alert.await["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("account=acct-embed&model=text-embedding-v4"),
        "{text}"
    );
}
