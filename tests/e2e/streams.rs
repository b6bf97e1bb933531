//! Streaming scenarios: pass-through, usage accounting, failures before and after the first token.

use crate::support::{chat_body, counters, eventually, stat, Ctx, CLIENT_KEY};
use crate::Scenario;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("stream_arrives_intact_and_in_order", |c| {
            Box::pin(intact(c))
        }),
        (
            "stream_usage_chunk_only_when_asked_but_always_counted",
            |c| Box::pin(usage(c)),
        ),
        ("stream_error_frames_before_content_are_invisible", |c| {
            Box::pin(error_first(c))
        }),
        ("stream_error_after_content_ends_with_an_error_event", |c| {
            Box::pin(error_after(c))
        }),
        ("stream_slow_first_token_goes_to_the_next_candidate", |c| {
            Box::pin(slow_first(c))
        }),
        ("stream_client_disconnect_closes_the_upstream", |c| {
            Box::pin(disconnect(c))
        }),
        ("a_stream_longer_than_its_lease_still_counts", |c| {
            Box::pin(long_stream(c))
        }),
        ("a_streams_first_token_timer_starts_at_the_send", |c| {
            Box::pin(first_token_from_send(c))
        }),
    ]
}

fn body(include_usage: Option<bool>) -> Value {
    let mut b = json!({"model": "stream-test", "messages": [{"role": "user", "content": "Say hello"}], "stream": true});
    if let Some(flag) = include_usage {
        b["stream_options"] = json!({"include_usage": flag});
    }
    b
}

/// The `data:` payloads of an SSE text, in order.
fn datas(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").or_else(|| e.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

fn content(datas: &[String]) -> String {
    datas
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

async fn intact(ctx: Arc<Ctx>) {
    let reply = ctx.chat(&body(None)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply
        .header("content-type")
        .starts_with("text/event-stream"));
    assert_eq!(reply.header("x-gateway-served-model"), "qwen-turbo");
    assert_eq!(reply.header("x-gateway-requested-model"), "stream-test");
    let got = datas(&reply.text);
    assert_eq!(got.last().map(String::as_str), Some("[DONE]"));
    let direct = ctx
        .http
        .post(format!("{}/compatible-mode/v1/chat/completions", ctx.sim.url()))
        .bearer_auth("sk-b1")
        .json(&json!({"model": "qwen-turbo", "messages": [{"role": "user", "content": "Say hello"}], "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        content(&got),
        content(&datas(&direct)),
        "same words, same order"
    );
    for d in got.iter().filter(|d| d.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(
            v["model"], "qwen-turbo",
            "every chunk names the served model"
        );
    }
}

async fn usage(ctx: Arc<Ctx>) {
    let with = ctx.chat(&body(Some(true))).await;
    let last_chunk: Value =
        serde_json::from_str(&datas(&with.text).into_iter().rev().nth(1).unwrap()).unwrap();
    assert_eq!(last_chunk["choices"], json!([]), "{}", with.text);
    assert!(last_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // Bucket counters live for the whole run; the simulator's are per scenario: compare deltas.
    let before = ctx.bucket("acct-a", "qwen-turbo").await["state"]["counters"].clone();
    let sim_before = ctx.sim_model("acct-a", "qwen-turbo");
    let without = ctx.chat(&body(None)).await;
    assert!(
        !without.text.contains("\"choices\":[]"),
        "no usage chunk unasked: {}",
        without.text
    );
    assert!(
        datas(&without.text)
            .iter()
            .all(|d| !d.contains("total_tokens")),
        "{}",
        without.text
    );
    // The gateway still asked for usage upstream and settled the bucket with it.
    let sim = ctx.sim_model("acct-a", "qwen-turbo");
    let delta =
        |a: &Value, b: &Value, k: &str| a[k].as_u64().unwrap_or(0) - b[k].as_u64().unwrap_or(0);
    for _ in 0..30 {
        let now = ctx.bucket("acct-a", "qwen-turbo").await["state"]["counters"].clone();
        if delta(&now, &before, "ok") == 1 {
            for k in ["prompt_tokens", "completion_tokens"] {
                assert_eq!(
                    delta(&now, &before, k),
                    delta(&sim, &sim_before, k),
                    "{k}: real usage, not the estimate"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream without usage was never settled");
}

async fn error_first(ctx: Arc<Ctx>) {
    for fault in [
        json!({"kind": "stream_error", "shape": "native", "after_chunks": 0, "account": "acct-a"}),
        json!({"kind": "stream_error", "shape": "compat", "after_chunks": 0, "account": "acct-a",
               "code": "limit_requests", "message": "You have exceeded your current request limit."}),
    ] {
        ctx.reset(false).await;
        ctx.sim.push_fault(fault.clone()).unwrap();
        let reply = ctx.chat(&body(None)).await;
        assert_eq!(reply.status, 200, "{fault}: {}", reply.text);
        assert!(
            !reply.text.contains("\"error\""),
            "{fault}: the client sees no error: {}",
            reply.text
        );
        assert_eq!(
            datas(&reply.text).last().map(String::as_str),
            Some("[DONE]")
        );
        assert_eq!(reply.header("x-gateway-attempts"), "2", "{fault}");
        assert_eq!(
            ctx.sim_model("acct-b", "qwen-turbo")["ok"],
            1,
            "{fault}: served by acct-b"
        );
    }
}

async fn error_after(ctx: Arc<Ctx>) {
    for fault in [
        json!({"kind": "stream_error", "shape": "native", "after_chunks": 3, "times": 0}),
        json!({"kind": "stream_cut", "after_chunks": 3, "times": 0}),
    ] {
        ctx.sim.push_fault(fault.clone()).unwrap();
        let reply = ctx.chat(&body(None)).await;
        assert_eq!(reply.status, 200, "committed after the first token");
        let got = datas(&reply.text);
        assert_eq!(
            content(&got).split_whitespace().count(),
            3,
            "{fault}: the 3 chunks: {}",
            reply.text
        );
        let last: Value = serde_json::from_str(got.last().unwrap()).unwrap();
        assert!(
            last["error"]["message"].is_string(),
            "{fault}: ends with an error event: {}",
            reply.text
        );
        assert!(!reply.text.contains("[DONE]"));

        // The official SDK raises and does not hang.
        let python = ctx.root().join(".venv/bin/python");
        let script = ctx.root().join("tests/e2e/sdk_stream.py");
        let run = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(python)
                .arg(script)
                .args([&ctx.url(), CLIENT_KEY, "stream-test"])
                .output(),
        )
        .await
        .expect("the SDK does not hang")
        .expect("python runs");
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            out.starts_with("APIError after 3 chunks"),
            "{fault}: {out} {}",
            String::from_utf8_lossy(&run.stderr)
        );
        ctx.clear_faults().await;
    }
}

async fn slow_first(ctx: Arc<Ctx>) {
    ctx.sim
        .push_fault(json!({"kind": "slow_first_token", "ms": 3000, "account": "acct-a"}))
        .unwrap();
    let started = std::time::Instant::now();
    let reply = ctx.chat(&body(None)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "did not wait for the slow one"
    );
    assert_eq!(
        ctx.sim_model("acct-b", "qwen-turbo")["ok"],
        1,
        "served by acct-b"
    );
    assert_eq!(
        datas(&reply.text).last().map(String::as_str),
        Some("[DONE]")
    );
}

async fn disconnect(ctx: Arc<Ctx>) {
    let ok_before = ok_count(&ctx).await;
    ctx.sim
        .push_fault(json!({"kind": "slow_stream", "ms": 100}))
        .unwrap();
    let resp = ctx
        .http
        .post(format!("{}/v1/chat/completions", ctx.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "stream-test", "messages": [{"role": "user", "content": "Say hello"}], "stream": true, "max_tokens": 100}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").unwrap();
    assert!(!first.is_empty());
    drop(body);
    for _ in 0..50 {
        if ctx.sim.stats()["client_disconnects"].as_u64().unwrap_or(0) >= 1 {
            for _ in 0..30 {
                if ok_count(&ctx).await == ok_before + 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the lease was never settled after the disconnect");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the simulator never saw the upstream connection close");
}

async fn ok_count(ctx: &Ctx) -> u64 {
    ctx.bucket("acct-a", "qwen-turbo").await["state"]["counters"]["ok"]
        .as_u64()
        .unwrap_or(0)
}

async fn long_stream(ctx: Arc<Ctx>) {
    // Issue 7.6: a 3 s deadline gives a lease of 3 s + 3 s grace (60 s compressed 20x); the
    // stream lasts ~10 s, so it is settled well after its lease would have ended.
    ctx.sim
        .push_fault(json!({"kind": "slow_stream", "ms": 900, "account": "acct-b"}))
        .unwrap();
    let before = counters(&ctx, "acct-b", "qwen-turbo").await;
    let reply = ctx.chat(&chat_body("long-stream", true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("[DONE]"), "{}", reply.text);
    let want = stat(&before, &["ok"]) + 1;
    let counted = eventually(5, || {
        let ctx = ctx.clone();
        async move { stat(&counters(&ctx, "acct-b", "qwen-turbo").await, &["ok"]) == want }
    })
    .await;
    let after = counters(&ctx, "acct-b", "qwen-turbo").await;
    assert!(counted, "the late settle counted: {before} -> {after}");
    let sim = ctx.sim_model("acct-b", "qwen-turbo");
    assert_eq!(
        stat(&after, &["completion_tokens"]) - stat(&before, &["completion_tokens"]),
        stat(&sim, &["completion_tokens"]),
        "its real usage: {after} vs {sim}"
    );
}

async fn first_token_from_send(ctx: Arc<Ctx>) {
    // Issue 7.11: acct-a's answer headers take 800 ms; the first token must come within 500 ms
    // of the send, so the request goes to acct-b rather than waiting.
    ctx.sim
        .push_fault(json!({"kind": "delay", "ms": 800, "account": "acct-a"}))
        .unwrap();
    let reply = ctx.chat(&chat_body("stream-test", true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let a = ctx.sim_model("acct-a", "qwen-turbo");
    let b = ctx.sim_model("acct-b", "qwen-turbo");
    assert_eq!(stat(&b, &["ok"]), 1, "acct-b served: {b}");
    assert!(stat(&a, &["ok"]) <= 1, "{a}");
    assert_eq!(reply.header("x-gateway-attempts"), "2");
}
