//! Quota engine scenarios: rotation, no key-hopping, downgrade, parking, burst spacing, restart, load.

use crate::support::{chat_body, counters, eventually, stat, Ctx, Reply, MINUTE_MS};
use crate::Scenario;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("request_limit_moves_traffic_to_another_account", |c| {
            Box::pin(rotates_on_request_limit(c))
        }),
        ("no_second_key_of_an_account_after_its_429", |c| {
            Box::pin(no_key_hopping(c))
        }),
        ("saturated_primary_downgrades_along_the_chain", |c| {
            Box::pin(downgrades(c))
        }),
        ("no_fallback_header_gives_an_honest_429", |c| {
            Box::pin(no_fallback_header(c))
        }),
        ("a_client_may_wait_longer_for_the_primary", |c| {
            Box::pin(waits_longer(c))
        }),
        ("free_quota_exhausted_parks_the_bucket_until_cleared", |c| {
            Box::pin(free_quota_parks(c))
        }),
        ("burst_429_makes_the_gateway_space_requests", |c| {
            Box::pin(burst_spacing(c))
        }),
        ("parked_bucket_stays_parked_across_a_restart", |c| {
            Box::pin(park_survives_restart(c))
        }),
        ("load_200_concurrent_never_exceeds_a_limit", |c| {
            Box::pin(load_200(c))
        }),
        ("credits_with_room_then_past_the_limit_never_over", |c| {
            Box::pin(credits_then_past_the_limit(c))
        }),
        ("several_choices_are_reserved_in_full", |c| {
            Box::pin(choices_reserved_in_full(c))
        }),
    ]
}

fn errors(stats: &Value, kind: &str) -> u64 {
    stats["errors"][kind].as_u64().unwrap_or(0)
}

fn ok(stats: &Value) -> u64 {
    stats["ok"].as_u64().unwrap_or(0)
}

async fn rotates_on_request_limit(ctx: Arc<Ctx>) {
    // Someone else uses acct-a: upstream it has room for 1 request a minute, not the 6 we believe.
    ctx.sim
        .update_account("acct-a", json!({"limits": {"qwen3-max": {"rpm": 1}}}))
        .unwrap();
    for i in 0..6 {
        let reply = ctx.chat(&chat_body("rotate-test", false)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
        assert_eq!(reply.header("x-gateway-served-model"), "qwen3-max");
    }
    let a = ctx.sim_model("acct-a", "qwen3-max");
    let b = ctx.sim_model("acct-b", "qwen3-max");
    assert_eq!(ok(&a), 1, "acct-a served its one request: {a}");
    assert_eq!(
        errors(&a, "limit_requests"),
        2,
        "the first 429 is taken for jitter, the second teaches the gateway; then acct-a cooled: {a}"
    );
    assert_eq!(ok(&b), 5, "the rest moved to acct-b: {b}");
}

async fn no_key_hopping(ctx: Arc<Ctx>) {
    ctx.sim
        .update_account("acct-a", json!({"limits": {"qwen3-max": {"rpm": 1}}}))
        .unwrap();
    for _ in 0..5 {
        assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    }
    let keys = &ctx.sim.stats()["keys"];
    let a_calls =
        keys["sk-a1"]["calls"].as_u64().unwrap() + keys["sk-a2"]["calls"].as_u64().unwrap();
    assert_eq!(
        a_calls, 3,
        "after acct-a's second 429 (the first is taken for jitter) neither of its keys was tried again: {keys}"
    );
}

async fn concurrent(ctx: &Arc<Ctx>, n: usize, model: &str) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let ctx = ctx.clone();
            let body = chat_body(model, false);
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(60), ctx.chat(&body))
                    .await
                    .expect("no request hangs")
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for t in tasks {
        replies.push(t.await.expect("request task"));
    }
    replies
}

async fn downgrades(ctx: Arc<Ctx>) {
    // Capacity per compressed minute: qwen3-max 3 x 6, qwen-plus 3 x 12, qwen-turbo 3 x 30.
    let replies = concurrent(&ctx, 70, "qwen3-max").await;
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for r in &replies {
        if r.status == 429 {
            assert!(r.header("retry-after").parse::<u64>().is_ok(), "{}", r.text);
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text);
        let model = r.header("x-gateway-served-model").to_string();
        assert_eq!(
            r.json()["model"],
            model.as_str(),
            "the body's model is the served model"
        );
        assert_eq!(r.header("x-gateway-requested-model"), "qwen3-max");
        match model.as_str() {
            "qwen3-max" => assert_eq!(r.header("x-gateway-fallback-reason"), ""),
            "qwen-plus" => assert_eq!(
                r.header("x-gateway-fallback-reason"),
                "qwen3-max:no_capacity"
            ),
            "qwen-turbo" => assert_eq!(
                r.header("x-gateway-fallback-reason"),
                "qwen3-max:no_capacity,qwen-plus:no_capacity"
            ),
            other => panic!("served by {other}"),
        }
        *served.entry(model).or_default() += 1;
    }
    for model in ["qwen3-max", "qwen-plus", "qwen-turbo"] {
        assert!(
            served.get(model).copied().unwrap_or(0) > 0,
            "{model} served some: {served:?}"
        );
    }
    assert_eq!(
        served.values().sum::<usize>(),
        70,
        "all were served: {served:?}"
    );
    assert_no_upstream_429(&ctx);
}

fn assert_no_upstream_429(ctx: &Ctx) {
    let stats = ctx.sim.stats();
    for (account, a) in stats["accounts"].as_object().unwrap() {
        for (model, m) in a["models"].as_object().unwrap() {
            assert_eq!(
                m["over_limit"], 0,
                "{account}/{model} was sent over its limit: {m}"
            );
        }
    }
}

async fn no_fallback_header(ctx: Arc<Ctx>) {
    let url = format!("{}/v1/chat/completions", ctx.url());
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let reply = ctx
            .send(
                ctx.http
                    .post(&url)
                    .bearer_auth(crate::support::CLIENT_KEY)
                    .header("x-gateway-fallback", "none")
                    .json(&chat_body("qwen3-max", false)),
            )
            .await;
        if reply.status == 429 {
            let error = reply.assert_error(429);
            assert_eq!(error["type"], "rate_limit_exceeded");
            let retry_after: u64 = reply
                .header("retry-after")
                .parse()
                .expect("Retry-After in seconds");
            assert!(
                (1..=60).contains(&retry_after),
                "honest Retry-After: {retry_after}"
            );
            assert!(error["message"].as_str().unwrap().contains("qwen3-max"));
        } else {
            assert_eq!(
                reply.header("x-gateway-served-model"),
                "qwen3-max",
                "never downgraded"
            );
        }
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        18,
        "3 accounts x 6 rpm: {statuses:?}"
    );
    assert_no_upstream_429(&ctx);
}

async fn waits_longer(ctx: Arc<Ctx>) {
    // The same 25 requests, from a batch job that would rather queue than be refused: each may
    // wait two (compressed) minutes for a qwen3-max slot instead of the model's 100 ms.
    let url = format!("{}/v1/chat/completions", ctx.url());
    let request = |wait: &str| {
        ctx.http
            .post(&url)
            .bearer_auth(crate::support::CLIENT_KEY)
            .header("x-gateway-fallback", "none")
            .header("x-gateway-max-wait-ms", wait)
            .json(&chat_body("qwen3-max", false))
    };
    let started = std::time::Instant::now();
    let wait = (2 * MINUTE_MS).to_string();
    for i in 0..25 {
        let reply = ctx.send(request(&wait)).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
        assert_eq!(reply.header("x-gateway-served-model"), "qwen3-max");
    }
    // 3 accounts x 6 a minute: the last 7 waited for the windows to move.
    assert!(started.elapsed() >= Duration::from_millis(MINUTE_MS / 2));
    assert_no_upstream_429(&ctx);
    // A wait that is not a number of milliseconds is the client's to fix, never sent.
    let calls = ctx.sim.stats()["total_calls"].clone();
    let reply = ctx.send(request("1m")).await;
    let error = reply.assert_error(400);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("x-gateway-max-wait-ms"));
    assert_eq!(ctx.sim.stats()["total_calls"], calls);
}

async fn free_quota_parks(ctx: Arc<Ctx>) {
    // The operator checks the webhook first: a test alert, delivered at once. Not without the
    // admin token.
    let test_url = format!("{}/admin/alerts/test", ctx.url());
    let test = || {
        ctx.http
            .post(&test_url)
            .bearer_auth(crate::support::ADMIN_TOKEN)
    };
    let sent = ctx.send(test()).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    assert_eq!(sent.json(), json!({"sent": true, "answer": 200}));
    assert_eq!(ctx.alerts("test").len(), 1, "{:?}", ctx.sim.hooks());
    let anonymous = ctx.send(ctx.http.post(&test_url)).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    ctx.sim
        .update_account("acct-a", json!({"state": "free_quota_exhausted"}))
        .unwrap();
    for _ in 0..4 {
        let reply = ctx.chat(&chat_body("rotate-test", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let a = ctx.sim_model("acct-a", "qwen3-max");
    assert_eq!(
        a["calls"], 1,
        "one call found the quota gone; none after: {a}"
    );
    let view = ctx.bucket("acct-a", "qwen3-max").await;
    assert!(
        view["state"]["parked"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{view}"
    );

    // Its operator is told at the webhook, once, with what to do.
    const ACCT_A: [(&str, &str); 2] = [("account", "acct-a"), ("model", "qwen3-max")];
    let alerts = |event: &str| ctx.alerts_about(event, &ACCT_A);
    let parked = ctx.alert_once("bucket_parked", &ACCT_A).await;
    let text = parked["text"].as_str().unwrap().to_string();
    assert!(text.contains("acct-a/qwen3-max is parked"), "{text}");
    assert!(
        text.contains("POST /admin/buckets/acct-a/qwen3-max/clear"),
        "{text}"
    );

    // Parked means parked, even after the window passes.
    tokio::time::sleep(Duration::from_millis(MINUTE_MS + 200)).await;
    assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    assert_eq!(ctx.sim_model("acct-a", "qwen3-max")["calls"], 1);

    assert_eq!(
        alerts("bucket_parked").len(),
        1,
        "told once however many it turned away"
    );

    // The operator tops up the account and clears the bucket: traffic returns to acct-a. Its
    // webhook answers 503 this time: the gateway logs that (never the webhook's URL).
    ctx.sim.set_hook_status(503);
    let unparks_before = alerts("bucket_unparked").len();
    ctx.sim
        .update_account("acct-a", json!({"state": "ok"}))
        .unwrap();
    let url = format!("{}/admin/buckets/acct-a/qwen3-max/clear", ctx.url());
    let cleared = ctx
        .send(ctx.http.post(url).bearer_auth(crate::support::ADMIN_TOKEN))
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    assert_eq!(cleared.json()["state"]["parked"], Value::Null);
    assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    assert_eq!(
        ok(&ctx.sim_model("acct-a", "qwen3-max")),
        1,
        "acct-a serves again"
    );
    let told = eventually(5, || async {
        alerts("bucket_unparked").len() > unparks_before
    })
    .await;
    assert!(
        told,
        "the end of the park is alerted: {:?}",
        ctx.sim.hooks()
    );
    // Tried three times (2 s and 10 s apart), then logged.
    let failed = eventually(20, || async {
        (ctx.gateway_log().lines()).any(|l| {
            l.contains(r#""event":"alert_failed""#)
                && l.contains(r#""alert":"bucket_unparked""#)
                && l.contains(r#""answer":503"#)
        })
    });
    assert!(failed.await, "the webhook's refusal is logged");
    let refused = ctx.send(test()).await;
    let error = refused.assert_error(502);
    assert_eq!(error["code"], "alert_not_delivered", "{}", refused.text);
    assert!(
        error["message"].as_str().unwrap().contains("answered 503"),
        "{}",
        refused.text
    );
    let tries = alerts("bucket_unparked").len() - unparks_before;
    assert_eq!(tries, 3, "a receiver answering 503 is tried three times");
}

async fn burst_spacing(ctx: Arc<Ctx>) {
    // acct-burst allows 3 requests per 500 simulated ms, far below its 600 rpm: a burst of 5 trips it.
    let first = concurrent(&ctx, 5, "burst-test").await;
    for r in &first {
        assert_eq!(
            r.status, 200,
            "the burst-limited request waited and went again: {}",
            r.text
        );
    }
    let after_burst = errors(
        &ctx.sim_model("acct-burst", "qwen-turbo"),
        "limit_burst_rate",
    );
    assert!(after_burst >= 1, "the burst was detected upstream");
    for _ in 0..10 {
        assert_eq!(ctx.chat(&chat_body("burst-test", false)).await.status, 200);
    }
    let m = ctx.sim_model("acct-burst", "qwen-turbo");
    assert_eq!(
        errors(&m, "limit_burst_rate"),
        after_burst,
        "spaced: no further burst 429s: {m}"
    );
    assert_eq!(ok(&m), 15);
}

async fn park_survives_restart(ctx: Arc<Ctx>) {
    ctx.sim
        .update_account("acct-a", json!({"state": "free_quota_exhausted"}))
        .unwrap();
    assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    assert_eq!(ctx.sim_model("acct-a", "qwen3-max")["calls"], 1);
    ctx.restart_gateway().await;
    for _ in 0..3 {
        assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    }
    assert_eq!(
        ctx.sim_model("acct-a", "qwen3-max")["calls"],
        1,
        "still parked after the restart"
    );
    let view = ctx.bucket("acct-a", "qwen3-max").await;
    assert!(view["state"]["parked"].is_string(), "{view}");
}

async fn credits_then_past_the_limit(ctx: Arc<Ctx>) {
    // Issue 9: with room, admissions go out in credits, spent with no round trip to the bucket;
    // pushed past its limit (120 a minute), the bucket is asked one by one and no upstream
    // window is exceeded. A fresh gateway: after the burst before, wrangler dev's proxy would
    // answer part of this one with its own 503 (it pools connections its worker then closes).
    ctx.restart_gateway().await;
    let mut served = 0;
    for _ in 0..4 {
        for r in concurrent(&ctx, 8, "room-test").await {
            assert_eq!(r.status, 200, "{}", r.text);
            served += 1;
        }
    }
    let credited = counters(&ctx, "relay-room", "qwen-turbo").await["credited"]
        .as_u64()
        .unwrap_or(0);
    assert!(credited > 0, "credits in use while the bucket had room");
    for r in concurrent(&ctx, 150, "room-test").await {
        match r.status {
            200 => served += 1,
            429 => {
                r.assert_error(429);
                assert!(
                    r.header("retry-after").parse::<u64>().is_ok(),
                    "Retry-After"
                );
            }
            other => panic!("status {other}: {}", r.text),
        }
    }
    assert!(served >= 100, "the limit's worth is served: {served}");
    assert_no_upstream_429(&ctx);
    let model = &ctx.sim.stats()["accounts"]["acct-room"]["models"]["qwen-turbo"];
    let peak = model["peak"]["rpm"].as_u64().unwrap_or(u64::MAX);
    assert!(peak <= 120, "upstream minute peak {peak} > 120");
    assert_eq!(
        model["ok"].as_u64(),
        Some(served),
        "the simulator served what clients got"
    );
    // Every admission is settled as served or given back, but for the unspent rest of the
    // isolate's last credit (given back when it is next used, else counted until it expires).
    let settled = eventually(10, || async {
        let c = counters(&ctx, "relay-room", "qwen-turbo").await;
        let accounted = served + stat(&c, &["released"]);
        stat(&c, &["ok"]) == served
            && (accounted..=accounted + 32).contains(&stat(&c, &["admitted"]))
    })
    .await;
    let c = counters(&ctx, "relay-room", "qwen-turbo").await;
    assert!(settled, "served {served}, bucket {c}");
}

async fn load_200(ctx: Arc<Ctx>) {
    let replies = concurrent(&ctx, 200, "qwen3-max").await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for r in &replies {
        *by_status.entry(r.status).or_default() += 1;
        match r.status {
            200 => assert!(!r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .is_empty()),
            429 => {
                r.assert_error(429);
                assert!(
                    r.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1),
                    "Retry-After"
                );
            }
            other => panic!("status {other}: {}", r.text),
        }
    }
    assert!(
        by_status.get(&200).copied().unwrap_or(0) >= 100,
        "most are served: {by_status:?}"
    );
    assert_no_upstream_429(&ctx);
    let stats = ctx.sim.stats();
    for (account, a) in stats["accounts"].as_object().unwrap() {
        for (model, m) in a["models"].as_object().unwrap() {
            for peak in ["rpm", "rps"] {
                if let Some(limit) = m["limits"][peak].as_u64() {
                    let seen = m["peak"][peak].as_u64().unwrap_or(0);
                    assert!(
                        seen <= limit,
                        "{account}/{model}: {peak} peak {seen} > {limit}"
                    );
                }
            }
        }
    }
}

async fn choices_reserved_in_full(ctx: Arc<Ctx>) {
    // `n` choices each use up to `max_tokens`: 10 requests of 4 choices of 8 tokens (40 tokens
    // each upstream, 42 reserved) against 300 tokens a minute. Reserving one choice's (18) would
    // send all 10 at once and the upstream would refuse 3; reserved in full, 7 go now and 3
    // wait for the window to move.
    let body = json!({"model": "choices-test", "messages": [{"role": "user", "content": "hi"}],
                      "n": 4, "max_tokens": 8});
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (ctx, body) = (ctx.clone(), body.clone());
            tokio::spawn(async move { ctx.chat(&body).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("request task");
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json()["choices"].as_array().map(Vec::len),
            Some(4),
            "{}",
            r.text
        );
        assert_eq!(r.json()["usage"]["completion_tokens"], 32, "{}", r.text);
    }
    // A stream of several choices passes every choice's events through.
    let stream = json!({"model": "choices-test", "messages": [{"role": "user", "content": "hi"}],
                        "n": 2, "max_tokens": 3, "stream": true});
    let r = ctx.chat(&stream).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut texts = [String::new(), String::new()];
    for line in r.text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(chunk) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let i = choice["index"].as_u64().expect("index") as usize;
            texts[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(
        texts,
        ["Simulated answer from", "Simulated answer from"],
        "{}",
        r.text
    );
    let upstream = ctx.sim_model("acct-tpm", "qwen-plus");
    assert_eq!(
        upstream["over_limit"], 0,
        "sent over the token limit: {upstream}"
    );
    assert_eq!(upstream["ok"], 11, "{upstream}");
    let settled = eventually(10, || async {
        let c = counters(&ctx, "acct-tpm", "qwen-plus").await;
        stat(&c, &["completion_tokens"]) == upstream["completion_tokens"].as_u64().unwrap_or(0)
    })
    .await;
    let c = counters(&ctx, "acct-tpm", "qwen-plus").await;
    assert!(
        settled,
        "the gateway counts the tokens the upstream counted: {c} vs {upstream}"
    );
}
