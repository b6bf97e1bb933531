//! Failure paths that must end well: refused keys, oversized requests, slow or failing
//! buckets, clients who leave, relays' own 4xx, huge bodies, odd model names, logs.

use crate::support::{
    chat_body, counters, eventually, stat, Ctx, ADMIN_TOKEN, CLIENT_KEY, MINUTE_MS, UPSTREAM_KEYS,
};
use crate::Scenario;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("three_refused_keys_then_the_fourth_serves", |c| {
            Box::pin(three_refused_keys(c))
        }),
        ("an_oversized_request_gets_a_400_naming_its_size", |c| {
            Box::pin(oversized(c))
        }),
        ("a_photo_is_counted_as_an_image_not_as_its_base64", |c| {
            Box::pin(photo(c))
        }),
        (
            "one_oversized_request_does_not_make_others_downgrade",
            |c| Box::pin(no_cache_poisoning(c)),
        ),
        ("a_slow_or_failing_bucket_is_rotated_around_then_503", |c| {
            Box::pin(slow_bucket(c))
        }),
        ("a_bucket_that_cannot_write_keeps_its_windows", |c| {
            Box::pin(failing_writes(c))
        }),
        ("requests_abandoned_while_waiting_are_never_sent", |c| {
            Box::pin(abandoned_while_waiting(c))
        }),
        ("a_call_abandoned_upstream_is_cancelled_and_settled", |c| {
            Box::pin(abandoned_upstream(c))
        }),
        ("a_relays_own_4xx_parks_it_and_rotates", |c| {
            Box::pin(relay_4xx(c))
        }),
        ("a_huge_body_gets_413_and_spares_a_live_stream", |c| {
            Box::pin(huge_body(c))
        }),
        ("admin_paths_reach_models_with_slashes", |c| {
            Box::pin(slash_models(c))
        }),
        ("failures_are_logged_as_json_without_secrets", |c| {
            Box::pin(failures_logged(c))
        }),
        ("an_object_call_through_fetch_is_still_answered", |c| {
            Box::pin(object_call_through_fetch(c))
        }),
    ]
}

async fn object_call_through_fetch(ctx: Arc<Ctx>) {
    // Calls come by RPC; an isolate of the previous deployment, during a rollout, still sends
    // them through the object's `fetch`: the same call answered the same way.
    let url = format!("{}/__test/bucket-fetch/acct-a:rollout-check", ctx.url());
    let call = |op: Value| {
        json!({"bucket": "acct-a:rollout-check", "limits": {"rpm": 5},
               "spec": {"second_ms": 1000, "minute_ms": 60000}, "op": op})
    };
    let send = |body: Value| {
        let (http, url) = (ctx.http.clone(), url.clone());
        async move {
            let resp = http.post(&url).json(&body).send().await.expect("send");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let acquire = json!({"acquire": {"est_tokens": 10, "max_wait_ms": 0, "lease_ttl_ms": 60000}});
    let (status, text) = send(call(acquire)).await;
    assert_eq!(status, 200, "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        reply["admission"]["admission"]["go"]["lease"].is_u64(),
        "admitted: {reply}"
    );
    let (status, text) = send(call(json!("snapshot"))).await;
    assert_eq!(status, 200, "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        reply["state"]["state"]["in_flight"], 1,
        "the acquire counted: {reply}"
    );
    let (status, text) = send(json!({"not": "a call"})).await;
    assert!(
        status >= 400,
        "a malformed call is refused: {status} {text}"
    );
}

async fn three_refused_keys(ctx: Arc<Ctx>) {
    // Issue 7.1: a refused key has its own budget (the account's keys), not the 5xx retries.
    let reply = ctx.chat(&chat_body("keys4-test", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let refused = stat(&ctx.sim.stats(), &["unauthorized"]);
    assert!(refused <= 3, "each revoked key at most once: {refused}");
    assert_eq!(
        reply.header("x-gateway-attempts"),
        (refused + 1).to_string(),
        "every upstream call counted"
    );
    let view = ctx.bucket("acct-keys4", "qwen-plus").await;
    assert_eq!(view["state"]["parked"], Value::Null, "{view}");
    // The refused keys are remembered, merged with what the bucket already knew.
    for _ in 0..3 {
        assert_eq!(ctx.chat(&chat_body("keys4-test", false)).await.status, 200);
    }
    assert_eq!(stat(&ctx.sim.stats(), &["unauthorized"]), refused);
    let view = ctx.bucket("acct-keys4", "qwen-plus").await;
    assert_eq!(
        view["refused_keys"].as_array().map(Vec::len),
        Some(refused as usize),
        "{view}"
    );
}

async fn oversized(ctx: Arc<Ctx>) {
    // Issue 7.3: larger than every candidate of the chain (qwen-turbo's 100000 TPM is the largest).
    for max_tokens in [json!(100_000_000u64), json!(u64::MAX)] {
        let mut body = chat_body("qwen3-max", false);
        body["max_tokens"] = max_tokens.clone();
        let reply = ctx.chat(&body).await;
        let error = reply.assert_error(400);
        assert_eq!(error["code"], "request_too_large", "{error}");
        assert_eq!(error["param"], "max_tokens", "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("100000 "),
            "names the largest limit: {message}"
        );
        assert!(!message.contains("parked"), "{message}");
        assert_eq!(reply.header("x-should-retry"), "false");
    }
    // Too large for qwen3-max (20000 TPM) but not for qwen-plus (40000): downgraded, and says why.
    let mut body = chat_body("qwen3-max", false);
    body["max_tokens"] = json!(30_000);
    let reply = ctx.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-served-model"), "qwen-plus");
    assert_eq!(
        reply.header("x-gateway-fallback-reason"),
        "qwen3-max:too_large"
    );
    assert_eq!(
        stat(&ctx.sim.stats(), &["total_calls"]),
        1,
        "one call in all"
    );
}

async fn photo(ctx: Arc<Ctx>) {
    // A phone's photo sent inline: 2 MB of base64, which as text would be about 700,000 tokens
    // (too large for every account) but is one image (2,560 tokens at most on Qwen-VL).
    let photo = format!("data:image/jpeg;base64,{}", "A".repeat(2_000_000));
    let body = json!({"model": "qwen3-max", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this photo?"},
        {"type": "image_url", "image_url": {"url": photo}}
    ]}]});
    let reply = ctx.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-served-model"), "qwen3-max");
    assert_eq!(reply.header("x-gateway-fallback-reason"), "");
}

async fn no_cache_poisoning(ctx: Arc<Ctx>) {
    // Issue 7.2: a denial about one request is not a fact about the bucket.
    let mut body = chat_body("qwen3-max", false);
    body["max_tokens"] = json!(100_000_000u64);
    ctx.chat(&body).await.assert_error(400);
    for _ in 0..3 {
        let reply = ctx.chat(&chat_body("qwen3-max", false)).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("x-gateway-served-model"), "qwen3-max");
        assert_eq!(reply.header("x-gateway-fallback-reason"), "");
    }
}

async fn slow_bucket(ctx: Arc<Ctx>) {
    // Issue 7.4: rotate-test is acct-a (preferred) then acct-b; acct-a's bucket hangs for 10 s.
    ctx.bucket_fault("acct-a", "qwen3-max", json!({"delay_ms": 10_000}))
        .await;
    let started = Instant::now();
    let reply = ctx.chat(&chat_body("rotate-test", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the bucket timeout (1 s) bounds the wait: {:?}",
        started.elapsed()
    );
    assert_eq!(ok_of(&ctx, "acct-b"), 1, "served by the other account");
    // Both buckets fail: an OpenAI-shaped 503 with Retry-After, not a 500.
    ctx.bucket_fault("acct-b", "qwen3-max", json!({"error": true}))
        .await;
    let reply = ctx.chat(&chat_body("rotate-test", false)).await;
    let error = reply.assert_error(503);
    assert_eq!(error["code"], "quota_store_unavailable");
    assert!(reply
        .header("retry-after")
        .parse::<u64>()
        .is_ok_and(|s| s >= 1));
    assert_eq!(ok_of(&ctx, "acct-b"), 1, "nothing was sent upstream");
}

fn ok_of(ctx: &Ctx, account: &str) -> u64 {
    stat(&ctx.sim_model(account, "qwen3-max"), &["ok"])
}

async fn failing_writes(ctx: Arc<Ctx>) {
    // Issue 7.4: SQLite refuses every write; the object keeps counting in memory.
    ctx.bucket_fault("acct-c", "qwen-plus", json!({"fail_writes": true}))
        .await;
    let mut served = 0;
    for _ in 0..14 {
        let reply = ctx.chat(&chat_body("write-test", false)).await;
        match reply.status {
            200 => served += 1,
            429 => assert!(reply.header("retry-after").parse::<u64>().is_ok()),
            other => panic!("{other}: {}", reply.text),
        }
    }
    assert_eq!(served, 12, "qwen-plus allows 12 a minute, and no more");
    let sim = ctx.sim_model("acct-c", "qwen-plus");
    assert_eq!(stat(&sim, &["over_limit"]), 0, "{sim}");
    assert!(
        ctx.gateway_log().contains("bucket_write_failed"),
        "the failed writes are logged"
    );
}

/// Sends a chat request whose client leaves after `after_ms` (see `faults.mjs`).
async fn abandon(ctx: &Ctx, model: &str, after_ms: u64) {
    let url = format!(
        "{}/__test/client-leaves/{after_ms}/v1/chat/completions",
        ctx.url()
    );
    let reply = ctx
        .send(
            ctx.http
                .post(url)
                .bearer_auth(CLIENT_KEY)
                .json(&chat_body(model, false)),
        )
        .await;
    assert_eq!(
        reply.json()["left"],
        true,
        "the client left first: {}",
        reply.text
    );
}

async fn abandoned_while_waiting(ctx: Arc<Ctx>) {
    // Issue 7.5: one account at 3 rpm; three requests fill the window.
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            ctx.chat(&chat_body("abandon-test", false)).await.status,
            200
        );
    }
    // Three more get slots in the next window; their clients leave after 1 s.
    let leavers: Vec<_> = (0..3)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { abandon(&ctx, "abandon-test", 1_000).await })
        })
        .collect();
    for l in leavers {
        l.await.expect("leaver");
    }
    let released = eventually(2, || {
        let ctx = ctx.clone();
        async move {
            stat(
                &counters(&ctx, "acct-slow", "qwen3-max").await,
                &["released"],
            ) == 3
        }
    })
    .await;
    assert!(released, "the three slots were given back at once");
    // Three fresh requests take the freed slots of the next window, not the one after.
    let fresh: Vec<_> = (0..3)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.chat(&chat_body("abandon-test", false)).await })
        })
        .collect();
    for f in fresh {
        let reply = f.await.expect("fresh");
        assert_eq!(reply.status, 200, "{}", reply.text);
        // Each waited for its slot, and says how long.
        let waited: u64 = reply.header("x-gateway-wait-ms").parse().unwrap_or(0);
        assert!(waited > 500, "waited {waited} ms");
    }
    // The freed slots open at one window (3.3 s); without the release they would wait for
    // the window after (6.6 s).
    let window = Duration::from_millis(MINUTE_MS + 300);
    assert!(
        t0.elapsed() < window * 3 / 2,
        "served in the second window: {:?}",
        t0.elapsed()
    );
    let sim = ctx.sim_model("acct-c", "qwen3-max");
    assert_eq!(
        stat(&sim, &["calls"]),
        6,
        "never sent for the clients who left: {sim}"
    );
}

async fn abandoned_upstream(ctx: Arc<Ctx>) {
    // Issue 7.5: the client leaves during a slow non-streamed call.
    ctx.sim
        .push_fault(json!({"kind": "delay", "ms": 3_000, "account": "acct-c"}))
        .unwrap();
    let before = counters(&ctx, "acct-c", "qwen-plus").await;
    abandon(&ctx, "write-test", 500).await;
    let want = stat(&before, &["cancelled"]) + 1;
    let settled = eventually(5, || {
        let ctx = ctx.clone();
        async move { stat(&counters(&ctx, "acct-c", "qwen-plus").await, &["cancelled"]) == want }
    })
    .await;
    assert!(settled, "settled as cancelled");
    let disconnects = eventually(5, || {
        let left = stat(&ctx.sim.stats(), &["client_disconnects"]);
        async move { left == 1 }
    })
    .await;
    assert!(
        disconnects,
        "the upstream call was aborted: {}",
        ctx.sim.stats()
    );
    let sim = ctx.sim_model("acct-c", "qwen-plus");
    assert_eq!(stat(&sim, &["ok"]), 0, "nothing was answered: {sim}");
}

async fn relay_4xx(ctx: Arc<Ctx>) {
    // Issue 7.7: relay-a (preferred) answers 402, then 404, then 403, for its own reasons;
    // then 200 with a web page (its base_url missing /v1, say), which no client can read.
    for (status, body) in [
        (
            402,
            r#"{"error":{"message":"Insufficient balance.","type":"insufficient_balance","code":"insufficient_balance"}}"#,
        ),
        (
            404,
            r#"{"error":{"message":"The model `qwen-turbo` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
        ),
        (
            403,
            r#"{"error":{"message":"Model not allowed for this key","type":"permission_denied","code":"model_not_allowed"}}"#,
        ),
        (
            200,
            "<!doctype html><html><title>Relay console</title></html>",
        ),
    ] {
        ctx.reset(false).await;
        ctx.sim
            .push_fault(json!({"kind": "status", "status": status, "body": body, "key": "sk-b1", "times": 0}))
            .unwrap();
        for i in 0..3 {
            // The web page comes first for a stream, as text/html.
            let stream = status == 200 && i == 0;
            let reply = ctx.chat(&chat_body("relay-test", stream)).await;
            assert_eq!(reply.status, 200, "{status} request {i}: {}", reply.text);
        }
        let keys = &ctx.sim.stats()["keys"];
        assert_eq!(
            keys["sk-b1"]["calls"], 1,
            "{status}: relay-a parked after one: {keys}"
        );
        assert_eq!(
            keys["sk-c1"]["calls"], 3,
            "{status}: relay-b served: {keys}"
        );
        let view = ctx.bucket("relay-a", "qwen-turbo").await;
        assert!(view["state"]["parked"].is_string(), "{status}: {view}");
        if status == 200 {
            assert_eq!(view["state"]["parked"], "not_an_api_answer", "{view}");
        }
        if status == 402 {
            // The whole account's park (its balance): told once, of the account, by the bucket
            // that learned it; its other model, parked on that word, tells nothing.
            let learned = [("account", "relay-a"), ("model", "qwen-turbo")];
            let alert = ctx.alert_once("bucket_parked", &learned).await;
            let text = alert["text"].as_str().unwrap();
            assert!(
                text.contains("relay-a is parked (insufficient_balance), every model of it"),
                "{text}"
            );
            let other = eventually(5, || async {
                ctx.bucket("relay-a", "qwen/qwen3-max").await["state"]["parked"].is_string()
            });
            assert!(other.await, "the account's other model is parked too");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let heard = [("account", "relay-a"), ("model", "qwen/qwen3-max")];
            assert_eq!(
                ctx.alerts_about("bucket_parked", &heard),
                Vec::<Value>::new()
            );
            // Topped up, the operator clears the account in one call, as the alert says.
            assert!(
                text.contains("POST /admin/accounts/relay-a/clear"),
                "{text}"
            );
            let url = |a: &str| format!("{}/admin/accounts/{a}/clear", ctx.url());
            let clear = |a: &str| ctx.send(ctx.http.post(url(a)).bearer_auth(ADMIN_TOKEN));
            let cleared = clear("relay-a").await;
            assert_eq!(cleared.status, 200, "{}", cleared.text);
            let buckets = cleared.json()["buckets"].clone();
            let models: Vec<&Value> = buckets
                .as_array()
                .unwrap()
                .iter()
                .map(|b| &b["model"])
                .collect();
            assert_eq!(
                models,
                [&json!("qwen-turbo"), &json!("qwen/qwen3-max")],
                "{buckets}"
            );
            for bucket in buckets.as_array().unwrap() {
                let state = &bucket["state"];
                assert!(state.is_object() && state["parked"].is_null(), "{buckets}");
            }
            let back = ctx.alert_once("bucket_unparked", &learned).await;
            assert!(
                back["text"]
                    .as_str()
                    .unwrap()
                    .contains("with its whole account"),
                "{back}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                ctx.alerts_about("bucket_unparked", &heard),
                Vec::<Value>::new()
            );
            assert_eq!(
                clear("no-such-account").await.assert_error(404)["code"],
                "account_not_found"
            );
        }
    }
    ctx.clear_faults().await;
}

async fn huge_body(ctx: Arc<Ctx>) {
    // Issue 7.8: a live stream runs while a 20 MB body arrives.
    ctx.sim
        .push_fault(json!({"kind": "slow_stream", "ms": 100, "account": "acct-a"}))
        .unwrap();
    let stream = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let resp = ctx
                .http
                .post(format!("{}/v1/chat/completions", ctx.url()))
                .bearer_auth(CLIENT_KEY)
                .json(&chat_body("stream-test", true))
                .send()
                .await
                .expect("stream answered");
            let mut resp = resp;
            let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
            while let Ok(Some(_)) = resp.chunk().await {
                gap = gap.max(last.elapsed());
                last = Instant::now();
            }
            gap
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A 20 MB body of small numbers is refused from its Content-Length alone: here the client
    // waits for the answer before sending any of it (as with `Expect: 100-continue`).
    let head =
        "{\"model\":\"qwen3-max\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"junk\":[";
    let mut body = format!("{head}{}1]}}", "1,".repeat(10_000_000)).into_bytes();
    let declared = format!("Content-Length: {}", body.len());
    let started = Instant::now();
    let (status, text, _) = raw_post(&ctx, &declared, Vec::new()).await;
    assert_eq!(status, 413, "{text}");
    let error: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(error["error"]["code"], "request_too_large", "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Without a Content-Length the cap holds too: the streamed body is cut at 4 MiB.
    body.truncate(6 << 20);
    let parts: Vec<Vec<u8>> = body
        .chunks(1 << 20)
        .map(|c| [format!("{:x}\r\n", c.len()).as_bytes(), c, b"\r\n"].concat())
        .chain([b"0\r\n\r\n".to_vec()])
        .collect();
    let (status, text, _) = raw_post(&ctx, "Transfer-Encoding: chunked", parts).await;
    assert_eq!(status, 413, "{text}");
    let gap = stream.await.expect("stream task");
    assert!(
        gap < Duration::from_secs(1),
        "the stream never stalled: {gap:?}"
    );
    // And a body of many messages is refused before any work.
    let mut many = chat_body("qwen3-max", false);
    many["messages"] = json!(vec![json!({"role": "user", "content": "hi"}); 3_000]);
    let error = ctx.chat(&many).await.assert_error(400);
    assert_eq!(error["param"], "messages");
    assert_eq!(
        stat(&ctx.sim.stats(), &["total_calls"]),
        1,
        "only the stream went upstream"
    );
}

async fn slash_models(ctx: Arc<Ctx>) {
    // Issue 7.9: relay model names hold '/'.
    for path in ["relay-a/qwen%2Fqwen3-max", "relay-a/qwen/qwen3-max"] {
        let url = format!("{}/admin/buckets/{path}", ctx.url());
        let view = ctx.send(ctx.http.get(url).bearer_auth(ADMIN_TOKEN)).await;
        assert_eq!(view.status, 200, "{path}: {}", view.text);
        assert_eq!(view.json()["model"], "qwen/qwen3-max");
        let url = format!("{}/admin/buckets/{path}/clear", ctx.url());
        let cleared = ctx.send(ctx.http.post(url).bearer_auth(ADMIN_TOKEN)).await;
        assert_eq!(cleared.status, 200, "{path}: {}", cleared.text);
    }
}

async fn failures_logged(ctx: Arc<Ctx>) {
    // Issue 7.10: a settle that fails is logged with the request id and the bucket.
    ctx.sim
        .push_fault(json!({"kind": "slow_stream", "ms": 300, "account": "acct-b"}))
        .unwrap();
    let stream = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.chat(&chat_body("long-stream", true)).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ctx.bucket_fault("acct-b", "qwen-turbo", json!({"error": true}))
        .await;
    let reply = stream.await.expect("stream");
    assert_eq!(reply.status, 200);
    let request_id = reply.header("x-request-id").to_string();
    let logged = eventually(5, || {
        let found = json_lines(&ctx.gateway_log()).iter().any(|l| {
            l["event"] == "bucket_call_failed"
                && l["op"] == "settle"
                && l["bucket"] == "acct-b:qwen-turbo"
                && l["request_id"] == request_id.as_str()
        });
        async move { found }
    })
    .await;
    assert!(logged, "no settle failure logged for {request_id}");
    for line in json_lines(&ctx.gateway_log()) {
        let text = line.to_string();
        assert!(!text.contains("Say hello"), "prompt text logged: {text}");
        for secret in UPSTREAM_KEYS
            .iter()
            .map(|(_, key)| *key)
            .chain([CLIENT_KEY, ADMIN_TOKEN])
        {
            assert!(!text.contains(secret), "secret logged: {text}");
        }
    }
}

/// POSTs a chat request by hand: the headers, then the body parts from another task while
/// the answer is read. Returns (status, body, whether the answer came before every part was
/// sent).
async fn raw_post(ctx: &Ctx, framing: &str, parts: Vec<Vec<u8>>) -> (u16, String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = ctx.url().trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpStream::connect(&host)
        .await
        .expect("gateway reachable");
    let (mut reader, mut writer) = socket.into_split();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    let sent_all = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = {
        let sent_all = sent_all.clone();
        tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await.ok()?;
            for part in parts {
                writer.write_all(&part).await.ok()?;
            }
            sent_all.store(true, std::sync::atomic::Ordering::SeqCst);
            Some(writer)
        })
    };
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 65536];
    let read = async {
        loop {
            let n = reader.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length = head.lines().find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")?
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer");
    let early = !sent_all.load(std::sync::atomic::Ordering::SeqCst);
    sending.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body, early)
}

/// The gateway's own log lines (JSON objects with an `event`), wherever wrangler put them.
pub fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| l.find("{\"").map(|at| &l[at..]))
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}
