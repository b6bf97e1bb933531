//! Client access scenarios: client keys and user tokens, per-client and per-user limits and
//! budgets under concurrency, CORS, revocation, the clients' admin API.

use crate::gateway::Gateway;
use crate::support::{
    chat_body, secret_values, sha256_hex, stat, test_clients, Ctx, Reply, ADMIN_TOKEN, APP_A_KEY,
    APP_A_SIGNING, APP_B_KEY, APP_C_KEY, APP_ORIGIN, CLIENT_KEY,
};
use crate::Scenario;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "client_limits_hold_under_100_concurrent_from_several_clients",
            |c| Box::pin(limits_under_load(c)),
        ),
        (
            "a_client_with_room_is_admitted_from_credits_and_held_exactly_at_its_limit",
            |c| Box::pin(credits_then_limit(c)),
        ),
        (
            "a_client_over_its_rpm_that_may_wait_is_served_when_its_minute_has_room",
            |c| Box::pin(waits_for_its_limits(c)),
        ),
        ("user_tokens_meter_each_user_and_bad_tokens_say_why", |c| {
            Box::pin(user_tokens(c))
        }),
        ("a_users_stored_responses_are_theirs_alone", |c| {
            Box::pin(stored_responses_per_user(c))
        }),
        ("cors_answers_allowed_origins_only", |c| Box::pin(cors(c))),
        ("a_revoked_client_is_refused_at_once", |c| {
            Box::pin(revoked_client(c))
        }),
        (
            "a_client_mid_rotation_is_served_under_its_old_and_new_key_and_secret",
            |c| Box::pin(rotation(c)),
        ),
        (
            "a_browser_app_calls_with_a_user_token_from_an_allowed_origin_only",
            |c| Box::pin(browser(c)),
        ),
        // Last: it reads what every scenario before it made the gateway send and log.
        ("no_secret_reached_a_client_or_a_log", |c| {
            Box::pin(no_secret_anywhere(c))
        }),
    ]
}

/// An HS256 token as an app's backend mints it (independent of the gateway's own code).
pub fn mint(claims: &Value, secret: &str) -> String {
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A short chat request for `model` with `credential`.
fn chat_request(ctx: &Ctx, credential: &str, model: &str) -> reqwest::RequestBuilder {
    let mut body = chat_body(model, false);
    body["max_tokens"] = json!(16);
    (ctx.http.post(format!("{}/v1/chat/completions", ctx.url())))
        .bearer_auth(credential)
        .json(&body)
}

async fn call(ctx: &Ctx, credential: &str, model: &str) -> Reply {
    ctx.send(chat_request(ctx, credential, model)).await
}

/// `call` with the client's own wait.
async fn call_waiting(ctx: &Ctx, credential: &str, model: &str, max_wait_ms: u64) -> Reply {
    let request = chat_request(ctx, credential, model);
    ctx.send(request.header("x-gateway-max-wait-ms", max_wait_ms.to_string()))
        .await
}

/// app-a (20 a compressed minute of 3.3 s) sends a batch of 30 at once, asking to wait up to
/// 10 s: the first 20 go at once, the other 10 wait for the slots their minute frees and are
/// served then, none refused; its meter, its log lines and the simulator agree. A request that
/// may not wait that long meanwhile is refused with an honest Retry-After.
async fn waits_for_its_limits(ctx: Arc<Ctx>) {
    admin(&ctx, "app-a", true).await;
    let served_before = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]);
    let scheduled = |report: &Value| -> u64 {
        let days = report.as_array().cloned().unwrap_or_default();
        days.iter().map(|d| stat(d, &["scheduled"])).sum()
    };
    let scheduled_before = scheduled(&client_report(&ctx, "app-a").await);
    let batch: Vec<_> = (0..30)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { call_waiting(&ctx, APP_A_KEY, "client-test", 10_000).await })
        })
        .collect();
    // While the last 10 wait, one that may wait a second only finds no room within it.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let impatient = call_waiting(&ctx, APP_A_KEY, "client-test", 1_000).await;
    let e = impatient.assert_error(429);
    assert_eq!(e["code"], "rate_limit_exceeded", "{}", impatient.text);
    let retry_after = impatient.header("retry-after").parse::<u64>().unwrap_or(0);
    assert!(retry_after >= 2, "Retry-After {retry_after}");
    let mut waited = Vec::new();
    for call in batch {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        if let Ok(ms) = reply.header("x-gateway-wait-ms").parse::<u64>() {
            waited.push(ms);
        }
    }
    // The answers say which waited: 10, each for the rest of the first minute (at least the
    // 3.3 s less the 0.8 s the batch may have taken to arrive).
    assert_eq!(waited.len(), 10, "waited: {waited:?}");
    assert!(waited.iter().all(|w| *w >= 2_500), "waited: {waited:?}");
    let served = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]) - served_before;
    assert_eq!(
        served, 30,
        "every request of the batch reached the upstream once"
    );
    let view = admin(&ctx, "app-a", false).await;
    assert_eq!(stat(&view, &["usage", "totals", "admitted"]), 30, "{view}");
    assert_eq!(
        stat(&view, &["usage", "totals", "rate_limited"]),
        1,
        "{view}"
    );
    assert_eq!(stat(&view, &["usage", "totals", "scheduled"]), 10, "{view}");
    // The client's report says how many waited for its limits.
    let report = client_report(&ctx, "app-a").await;
    assert_eq!(scheduled(&report) - scheduled_before, 10, "{report}");
}

async fn stored_responses_per_user(ctx: Arc<Ctx>) {
    admin(&ctx, "app-a", true).await;
    let now = now_s();
    let token = |sub: &str| {
        let claims = json!({"iss": "app-a", "sub": sub, "iat": now, "exp": now + 300});
        mint(&claims, APP_A_SIGNING)
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let respond = |credential: &str, body: Value| {
        let url = format!("{}/v1/responses", ctx.url());
        ctx.send(ctx.http.post(url).bearer_auth(credential).json(&body))
    };
    let stored = |credential: &str, method: reqwest::Method, tail: &str| {
        let url = format!("{}/v1/responses/{tail}", ctx.url());
        ctx.send(ctx.http.request(method, url).bearer_auth(credential))
    };
    let first = respond(
        &alice,
        json!({"model": "client-test", "input": "Remember 42"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first.json()["id"].as_str().unwrap().to_string();
    // Streamed, the id in its events is alice's too.
    let streamed = respond(
        &alice,
        json!({"model": "client-test", "input": "More", "previous_response_id": id, "stream": true}),
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    let completed = streamed
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|e| e["type"] == "response.completed")
        .expect("response.completed");
    let second = completed["response"]["id"].as_str().unwrap().to_string();

    // Bob, of the same app, knowing both ids: nothing is his to read, delete or continue, and
    // nothing of it reaches the upstream; nor does the upstream's raw id help him.
    let calls = ctx.sim.stats()["total_calls"].clone();
    let raw = id.rsplit_once(".gw").unwrap().0.to_string();
    for (method, tail) in [
        (reqwest::Method::GET, id.clone()),
        (reqwest::Method::GET, format!("{second}/input_items")),
        (reqwest::Method::DELETE, id.clone()),
    ] {
        let reply = stored(&bob, method.clone(), &tail).await;
        assert_eq!(
            reply.assert_error(404)["param"],
            "response_id",
            "{method} {tail}"
        );
    }
    for previous in [&id, &second, &raw] {
        let body = json!({"model": "client-test", "input": "What was it?", "previous_response_id": previous});
        let reply = respond(&bob, body).await;
        let error = reply.assert_error(400);
        assert_eq!(error["code"], "previous_response_not_found", "{previous}");
    }
    assert_eq!(
        ctx.sim.stats()["total_calls"],
        calls,
        "nothing reached the upstream"
    );

    // Alice continues, reads and deletes hers; the app's own server (its client key) reads
    // its users' responses.
    let body =
        json!({"model": "client-test", "input": "What was it?", "previous_response_id": second});
    assert_eq!(respond(&alice, body).await.status, 200);
    let got = stored(&alice, reqwest::Method::GET, &id).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json()["id"], id.as_str());
    let server = stored(APP_A_KEY, reqwest::Method::GET, &second).await;
    assert_eq!(server.status, 200, "{}", server.text);
    let deleted = stored(&alice, reqwest::Method::DELETE, &id).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
}

async fn admin(ctx: &Ctx, path: &str, reset: bool) -> Value {
    let url = format!("{}/admin/clients/{path}", ctx.url());
    let req = if reset {
        ctx.http.post(format!("{url}/reset"))
    } else {
        ctx.http.get(url)
    };
    let reply = ctx.send(req.bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(reply.status, 200, "admin {path}: {}", reply.text);
    reply.json()
}

/// A client's report rows (today and yesterday).
async fn client_report(ctx: &Ctx, client: &str) -> Value {
    let url = format!("{}/admin/report?client={client}&days=2", ctx.url());
    let reply = ctx.send(ctx.http.get(url).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["days"].clone()
}

async fn limits_under_load(ctx: Arc<Ctx>) {
    // Fresh periods: app-b's daily budget carries over otherwise.
    admin(&ctx, "app-a", true).await;
    admin(&ctx, "app-b", true).await;
    admin(&ctx, "app-c", true).await;
    let history_before = client_report(&ctx, "app-a").await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..100 {
        let ctx = ctx.clone();
        let key = match i % 10 {
            0..=2 => APP_A_KEY,
            3 | 4 => APP_B_KEY,
            5 | 6 => APP_C_KEY,
            _ => CLIENT_KEY,
        };
        calls.push(tokio::spawn(async move {
            (key, call(&ctx, key, "client-test").await)
        }));
    }
    let mut by_client: std::collections::BTreeMap<&str, Vec<Reply>> = Default::default();
    for c in calls {
        let (key, reply) = c.await.unwrap();
        by_client.entry(key).or_default().push(reply);
    }
    let elapsed = started.elapsed();
    let ok = |key: &str| by_client[key].iter().filter(|r| r.status == 200).count() as u64;
    // app-a: 20 a (compressed 3 s) minute; the burst takes well under a window.
    assert!(
        elapsed.as_millis() < 3_000,
        "the burst took {elapsed:?}: the window check below assumes one window"
    );
    assert_eq!(
        ok(APP_A_KEY),
        20,
        "app-a admitted exactly its RPM of its 30"
    );
    for r in by_client[APP_A_KEY].iter().filter(|r| r.status != 200) {
        let e = r.assert_error(429);
        assert_eq!(e["code"], "rate_limit_exceeded", "{}", r.text);
        assert!(r.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
        assert!(e["message"].as_str().unwrap().contains("client `app-a`"));
    }
    // app-b: its daily tokens (600) allow some; the rest are told the budget is spent.
    let b_ok = ok(APP_B_KEY);
    assert!((1..40).contains(&b_ok), "app-b served {b_ok}");
    for r in by_client[APP_B_KEY].iter().filter(|r| r.status != 200) {
        let e = r.assert_error(429);
        assert_eq!(e["code"], "insufficient_quota", "{}", r.text);
        assert_eq!(r.header("x-should-retry"), "false");
    }
    let b_tokens: u64 = by_client[APP_B_KEY]
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| stat(&r.json(), &["usage", "total_tokens"]))
        .sum();
    assert!(b_tokens <= 600, "app-b used {b_tokens} tokens of 600");
    // app-c: its TPM (400) binds; what it really used in the window stays within it.
    let c_ok = ok(APP_C_KEY);
    let c_tokens: u64 = by_client[APP_C_KEY]
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| stat(&r.json(), &["usage", "total_tokens"]))
        .sum();
    assert!((1..20).contains(&c_ok), "app-c served {c_ok}");
    assert!(
        c_tokens <= 400,
        "app-c used {c_tokens} tokens in a minute of 400"
    );
    for r in by_client[APP_C_KEY].iter().filter(|r| r.status != 200) {
        assert_eq!(
            r.assert_error(429)["code"],
            "rate_limit_exceeded",
            "{}",
            r.text
        );
    }
    // The unlimited key of GATEWAY_KEYS is not slowed by the others' limits.
    assert_eq!(ok(CLIENT_KEY), 30, "every GATEWAY_KEYS request served");
    // What the simulator served is what the gateway admitted, and the admin views agree.
    let served = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]);
    assert_eq!(served, 20 + b_ok + c_ok + 30);
    let a = admin(&ctx, "app-a", false).await;
    assert_eq!(stat(&a, &["usage", "totals", "admitted"]), 20, "{a}");
    assert_eq!(stat(&a, &["usage", "totals", "rate_limited"]), 10, "{a}");
    let b = admin(&ctx, "app-b", false).await;
    assert_eq!(stat(&b, &["usage", "totals", "admitted"]), b_ok, "{b}");
    // The client's history counts the same.
    let history_after = client_report(&ctx, "app-a").await;
    let sum = |days: &Value, field: &str| -> u64 {
        days.as_array()
            .unwrap()
            .iter()
            .map(|d| stat(d, &[field]))
            .sum()
    };
    assert_eq!(
        sum(&history_after, "requests") - sum(&history_before, "requests"),
        20,
        "{history_after}"
    );
    assert_eq!(
        sum(&history_after, "rate_limited") - sum(&history_before, "rate_limited"),
        10
    );
    // Once settled, the day's tokens are what was really used.
    let settled = crate::support::eventually(5, || {
        let ctx = ctx.clone();
        async move { stat(&admin(&ctx, "app-b", false).await, &["usage", "day_tokens"]) == b_tokens }
    })
    .await;
    assert!(settled, "app-b's day tokens settle to {b_tokens}");
    // A client lists only the models it may call.
    let models = ctx
        .send(
            ctx.http
                .get(format!("{}/v1/models", ctx.url()))
                .bearer_auth(APP_B_KEY),
        )
        .await
        .json();
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1), "{models}");
    assert_eq!(models["data"][0]["id"], "client-test");
    // app-b spends the rest of its day: its operator is told at the webhook that it runs low,
    // then that it is spent, once each, with what to do.
    let mut refused = 0;
    for _ in 0..60 {
        let reply = call(&ctx, APP_B_KEY, "client-test").await;
        if reply.status == 429 {
            assert_eq!(reply.assert_error(429)["code"], "insufficient_quota");
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(refused, 3, "app-b's daily budget ran out");
    let app_b = [("client", "app-b")];
    let alert = ctx.alert_once("budget_spent", &app_b).await;
    let facts = (&alert["budget"], &alert["limit"]);
    assert_eq!(facts, (&json!("daily_tokens"), &json!(600)));
    let text = alert["text"].as_str().unwrap();
    let says = "client app-b has spent its daily token budget (";
    assert!(
        text.contains(says) && text.contains(" of 600 tokens)"),
        "{text}"
    );
    let spent = ctx.alerts_about("budget_spent", &app_b);
    assert_eq!(spent.len(), 1, "told once however many it refused");
    // Before that, once, that it ran low (80 % used).
    let low = ctx.alerts_about("budget_low", &app_b);
    assert_eq!(low.len(), 1, "{low:?}");
    let used = low[0]["used"].as_u64().unwrap();
    assert!((480..600).contains(&used), "told low at {used} of 600");
    // The app's server reads the same from its own usage.
    let usage = ctx.http.get(format!("{}/v1/usage", ctx.url()));
    let usage = ctx.send(usage.bearer_auth(APP_B_KEY)).await.json();
    assert_eq!(usage["limits"]["daily_tokens"], 600, "{usage}");
    let day = usage["day_tokens"].as_u64().unwrap();
    assert!((480..=600).contains(&day), "{usage}");
    // An operator's reset gives app-b its budget back at once.
    admin(&ctx, "app-b", true).await;
    assert_eq!(call(&ctx, APP_B_KEY, "client-test").await.status, 200);
}

/// app-a (20 a compressed minute) first with room: one request at a time, most admitted from
/// a credit its meter handed the isolate, no call to the meter; then a burst takes it past its
/// limit in the same minute: exactly the rest is served, the meter's counts and the
/// simulator's agree.
async fn credits_then_limit(ctx: Arc<Ctx>) {
    admin(&ctx, "app-a", true).await;
    let served_before = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]);
    let started = std::time::Instant::now();
    // The first request brings a credit; left unspent, its room comes back at the credit's end
    // (a compressed 25 ms), not when its reservations lapse (seconds).
    let first = call(&ctx, APP_A_KEY, "client-test").await;
    assert_eq!(first.status, 200);
    assert_room(&first, ("20", 19), "100000");
    let returned = crate::support::eventually(1, || {
        let ctx = ctx.clone();
        async move {
            let usage = admin(&ctx, "app-a", false).await["usage"].clone();
            stat(&usage, &["in_flight"]) == 0 && stat(&usage, &["minute_requests"]) == 1
        }
    })
    .await;
    assert!(
        returned,
        "the credit's unspent admissions came back at its end"
    );
    // Through the isolate's credit or its meter alike, the room told falls by one a request.
    for i in 1..10 {
        let reply = call(&ctx, APP_A_KEY, "client-test").await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
        assert_room(&reply, ("20", 19 - i), "100000");
    }
    let calm = admin(&ctx, "app-a", false).await;
    assert_eq!(stat(&calm, &["usage", "totals", "admitted"]), 10, "{calm}");
    let credited = stat(&calm, &["usage", "totals", "credited"]);
    assert!(
        credited >= 1,
        "no request was admitted from a credit: {calm}"
    );
    // The calm requests' background work (settles, credits returned at their end) is over
    // before the burst: wrangler dev's proxy reuses connections its worker closes as that work
    // ends, and answers requests sent on them with its own 503 ("Your worker restarted
    // mid-request"), which the worker never sees (support.rs, `fresh_gateway`).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { call(&ctx, APP_A_KEY, "client-test").await })
        })
        .collect();
    let mut ok = 0;
    for reply in burst {
        let mut reply = reply.await.unwrap();
        if reply.status == 503 && reply.text.contains("restarted mid-request") {
            // That proxy 503, once in a while: the request again (if the worker did see the
            // first, the meter counted it, and the exact counts below still hold).
            reply = call(&ctx, APP_A_KEY, "client-test").await;
        }
        match reply.status {
            200 => ok += 1,
            _ => {
                assert_eq!(reply.assert_error(429)["code"], "rate_limit_exceeded");
                assert_room(&reply, ("20", 0), "100000");
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed.as_millis() < 3_000,
        "took {elapsed:?}: the counts below assume one window"
    );
    assert_eq!(ok, 10, "the burst got exactly the minute's rest");
    let full = admin(&ctx, "app-a", false).await;
    assert_eq!(stat(&full, &["usage", "totals", "admitted"]), 20, "{full}");
    assert_eq!(
        stat(&full, &["usage", "totals", "rate_limited"]),
        10,
        "{full}"
    );
    let served = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]) - served_before;
    assert_eq!(served, 20, "the simulator served what the meter admitted");
    // A client with no limits of its own is told nothing of the upstreams' (shared) limits.
    let unlimited = call(&ctx, CLIENT_KEY, "client-test").await;
    assert_eq!(unlimited.status, 200);
    assert!(
        unlimited
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-ratelimit")),
        "{:?}",
        unlimited.headers
    );
    eprintln!("    {credited} of the first 10 admitted from credits");
}

/// The answer's `x-ratelimit-*` headers (OpenAI's) tell the caller its own limits: `requests`
/// (the limit, and exactly what remains), and the TPM; remaining tokens below it, and both
/// minutes clear within a minute and a credit's life (the config's `window_margin_ms`, 300,
/// widens both windows; a credit lives half the second window).
fn assert_room(reply: &Reply, requests: (&str, u64), tpm: &str) {
    let what = format!("{:?}", reply.headers);
    assert_eq!(
        reply.header("x-ratelimit-limit-requests"),
        requests.0,
        "{what}"
    );
    let remaining = reply.header("x-ratelimit-remaining-requests");
    assert_eq!(remaining, requests.1.to_string(), "{what}");
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), tpm, "{what}");
    let tokens: u64 = reply
        .header("x-ratelimit-remaining-tokens")
        .parse()
        .unwrap();
    assert!(tokens < tpm.parse().unwrap(), "{what}");
    let widened = |ms: f64| (ms / crate::support::TIME_SCALE) as u64 + 300;
    let longest = widened(60_000.0) + widened(1_000.0) / 2;
    for kind in ["requests", "tokens"] {
        let reset = go_duration_ms(reply.header(&format!("x-ratelimit-reset-{kind}")));
        assert!(reset <= longest, "{kind}: {what}");
    }
}

/// A Go duration as OpenAI writes `x-ratelimit-reset-*` (`250ms`, `2.95s`, `1m0s`), in ms.
fn go_duration_ms(text: &str) -> u64 {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().unwrap();
    }
    let (minutes, seconds) = match text.split_once('m') {
        Some((m, s)) => (m.parse::<u64>().unwrap(), s),
        None => (0, text),
    };
    let seconds = seconds
        .strip_suffix('s')
        .unwrap_or_else(|| panic!("{text}"));
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let fraction_ms = format!("{fraction:0<3}").parse::<u64>().unwrap();
    minutes * 60_000 + whole.parse::<u64>().unwrap() * 1_000 + fraction_ms
}

async fn user_tokens(ctx: Arc<Ctx>) {
    admin(&ctx, "app-a", true).await;
    let now = now_s();
    let token = |sub: &str, extra: Value| {
        let mut claims = json!({"iss": "app-a", "sub": sub, "iat": now, "exp": now + 300});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        mint(&claims, APP_A_SIGNING)
    };
    // u1 may make 3 requests a minute (and asks for a model its client does not allow).
    let u1 = token(
        "u1",
        json!({"rpm": 3, "models": ["client-test", "qwen3-max"]}),
    );
    let u2 = token("u2", json!({}));
    let mut u1_ok = 0;
    for _ in 0..5 {
        let r = call(&ctx, &u1, "client-test").await;
        // Of the user's limits and its client's, the tighter is told.
        let left = 2u64.saturating_sub(u1_ok);
        assert_room(&r, ("3", left), "100000");
        if r.status == 200 {
            u1_ok += 1;
        } else {
            let e = r.assert_error(429);
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("user `u1` of client `app-a`"),
                "{e}"
            );
        }
    }
    assert_eq!(u1_ok, 3, "u1 held to its token's rpm");
    // u1's page asks what it has left: its own limits and use, nothing of other users.
    let usage_url = format!("{}/v1/usage", ctx.url());
    let usage = |credential: &str| {
        let request = ctx.http.get(&usage_url).bearer_auth(credential);
        ctx.send(request.header("origin", APP_ORIGIN))
    };
    let mine = usage(&u1).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(mine.header("access-control-allow-origin"), APP_ORIGIN);
    let mine = mine.json();
    assert_eq!(
        (&mine["client"], &mine["user"]),
        (&json!("app-a"), &json!("u1")),
        "{mine}"
    );
    assert_eq!(mine["limits"]["rpm"], 3, "{mine}");
    assert_eq!(mine["minute_requests"], 3, "its three this minute: {mine}");
    assert!(mine.get("totals").is_none(), "{mine}");
    // The app's server, with the client's key, sees the client's; a key with no limits of its
    // own is not metered.
    let app = usage(APP_A_KEY).await.json();
    assert_eq!(
        (&app["user"], &app["limits"]["rpm"]),
        (&Value::Null, &json!(20)),
        "{app}"
    );
    let unmetered = usage(CLIENT_KEY).await.json();
    assert_eq!(unmetered["limits"], json!({}), "{unmetered}");
    assert!(unmetered.get("day_tokens").is_none(), "{unmetered}");
    assert_eq!(usage("no-such-key").await.status, 401);
    // u2 is not slowed by u1 at its limit.
    for _ in 0..3 {
        assert_eq!(call(&ctx, &u2, "client-test").await.status, 200);
    }
    // The token narrowed u1's models to what its client allows too.
    assert_eq!(
        call(&ctx, &u1, "qwen3-max").await.assert_error(403)["code"],
        "model_not_allowed"
    );
    assert_eq!(call(&ctx, &u2, "qwen-turbo-direct").await.status, 200);
    let user = admin(&ctx, "app-a/users/u1", false).await;
    assert_eq!(stat(&user, &["usage", "totals", "admitted"]), 3, "{user}");
    assert_eq!(
        stat(&user, &["usage", "limits", "rpm"]),
        20,
        "the admin view shows the client's limits"
    );
    let client = admin(&ctx, "app-a", false).await;
    assert_eq!(
        stat(&client, &["usage", "totals", "admitted"]),
        7,
        "{client}"
    );
    // A stream says the room left too, in its headers, before its first event.
    let mut body = chat_body("client-test", true);
    body["max_tokens"] = json!(16);
    let url = format!("{}/v1/chat/completions", ctx.url());
    let streamed = ctx
        .send(ctx.http.post(url).bearer_auth(&u2).json(&body))
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    assert!(streamed.text.contains("data: [DONE]"), "{}", streamed.text);
    // (At most the 8 admitted so far count: earlier ones may have left the compressed minute.)
    assert_eq!(streamed.header("x-ratelimit-limit-requests"), "20");
    let left = streamed
        .header("x-ratelimit-remaining-requests")
        .parse::<u64>();
    assert!(
        left.is_ok_and(|left| (12..20).contains(&left)),
        "{:?}",
        streamed.headers
    );
    // u3 may make 2 requests a minute: four sent at once, willing to wait, are all served, two
    // after its minute (its meter and its client's are both asked; the later slot is kept).
    let u3 = token("u3", json!({"rpm": 2}));
    let batch = (0..4).map(|_| call_waiting(&ctx, &u3, "client-test", 10_000));
    let replies = futures_util::future::join_all(batch).await;
    let mut waited = Vec::new();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text);
        waited.extend(reply.header("x-gateway-wait-ms").parse::<u64>().ok());
    }
    assert_eq!(waited.len(), 2, "waited: {waited:?}");
    assert!(waited.iter().all(|w| *w >= 2_500), "waited: {waited:?}");
    let user = admin(&ctx, "app-a/users/u3", false).await;
    assert_eq!(stat(&user, &["usage", "totals", "scheduled"]), 2, "{user}");
    // Bad tokens: 401 saying which check failed.
    let cases = [
        (
            mint(
                &json!({"iss": "app-a", "sub": "u", "exp": now - 120}),
                APP_A_SIGNING,
            ),
            "expired",
        ),
        (
            mint(
                &json!({"iss": "app-a", "sub": "u", "nbf": now + 200, "exp": now + 300}),
                APP_A_SIGNING,
            ),
            "not valid yet",
        ),
        (
            mint(
                &json!({"iss": "app-a", "sub": "u", "exp": now + 3_600}),
                APP_A_SIGNING,
            ),
            "lives longer",
        ),
        (
            mint(
                &json!({"iss": "app-a", "sub": "u", "exp": now + 60}),
                "wrong-secret",
            ),
            "signature",
        ),
        (
            mint(
                &json!({"iss": "app-b", "sub": "u", "exp": now + 60}),
                APP_A_SIGNING,
            ),
            "no client",
        ),
    ];
    for (t, says) in cases {
        let r = call(&ctx, &t, "client-test").await;
        let e = r.assert_error(401);
        assert_eq!(e["code"], "invalid_api_key");
        assert!(e["message"].as_str().unwrap().contains(says), "{says}: {e}");
    }
    // A tampered payload keeps its old signature: refused.
    let good = token("u3", json!({"rpm": 1}));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(json!({"iss": "app-a", "sub": "u3", "exp": now + 300, "rpm": 1000}).to_string());
    let r = call(&ctx, &parts.join("."), "client-test").await;
    assert!(r.assert_error(401)["message"]
        .as_str()
        .unwrap()
        .contains("signature"));
    // alg none, whatever the signature.
    let none = format!(
        "{}.{}.x",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(json!({"iss": "app-a", "sub": "u", "exp": now + 60}).to_string())
    );
    let r = call(&ctx, &none, "client-test").await;
    assert!(r.assert_error(401)["message"]
        .as_str()
        .unwrap()
        .contains("HS256"));
}

async fn cors(ctx: Arc<Ctx>) {
    let url = format!("{}/v1/chat/completions", ctx.url());
    let preflight = |origin: &'static str| {
        ctx.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-stainless-os",
            )
    };
    let r = ctx.send(preflight(APP_ORIGIN)).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.header("access-control-allow-origin"), APP_ORIGIN);
    assert!(r
        .header("access-control-allow-headers")
        .contains("authorization"));
    let methods = r.header("access-control-allow-methods");
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    assert_eq!(r.header("access-control-allow-credentials"), "");
    let r = ctx.send(preflight("http://evil.example")).await;
    assert_eq!(r.assert_error(403)["code"], "origin_not_allowed");
    assert_eq!(r.header("access-control-allow-origin"), "");
    // The real request: the origin is echoed for a client that allows it, with the headers
    // a browser app may read.
    let mut body = chat_body("client-test", false);
    body["max_tokens"] = json!(8);
    let post = |key: &str, origin: &str| {
        ctx.http
            .post(&url)
            .bearer_auth(key)
            .header("origin", origin)
            .json(&body)
    };
    let r = ctx.send(post(APP_A_KEY, APP_ORIGIN)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("access-control-allow-origin"), APP_ORIGIN);
    let exposed = r.header("access-control-expose-headers");
    for name in ["x-request-id", "x-gateway-served-model", "retry-after"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    // app-b lists no origin (a server-side client): served as ever, but no page may read it.
    let before = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]);
    let r = ctx.send(post(APP_B_KEY, APP_ORIGIN)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("access-control-allow-origin"), "");
    assert_eq!(
        stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]),
        before + 1
    );
    // A wrong key from a page some client allows: 401, readable so the page can say why.
    let before = before + 1;
    let r = ctx.send(post("wrong-key", APP_ORIGIN)).await;
    r.assert_error(401);
    assert_eq!(r.header("access-control-allow-origin"), APP_ORIGIN);
    // app-a lists its origins: any other is refused before anything is spent.
    let r = ctx.send(post(APP_A_KEY, "http://evil.example")).await;
    r.assert_error(403);
    assert_eq!(r.header("access-control-allow-origin"), "");
    assert_eq!(
        stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]),
        before
    );
}

async fn revoked_client(ctx: Arc<Ctx>) {
    assert_eq!(call(&ctx, APP_B_KEY, "client-test").await.status, 200);
    // Revoking app-b is one config change, deployed: a new gateway without it.
    let mut clients = test_clients();
    clients.as_object_mut().unwrap().remove("app-b");
    let mut gw = Deployed::start(&ctx, "revoked", clients, &[]).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut body = chat_body("client-test", false);
    body["max_tokens"] = json!(8);
    let send = |key: &str| ctx.http.post(&url).bearer_auth(key).json(&body);
    let r = ctx.send(send(APP_B_KEY)).await;
    assert_eq!(r.assert_error(401)["code"], "invalid_api_key");
    assert_eq!(ctx.send(send(APP_A_KEY)).await.status, 200);
    gw.stop();
}

/// Another gateway beside the suite's, on the same simulator, with its `clients` (and more
/// secrets): a config change, deployed.
struct Deployed {
    gw: Gateway,
    dir: std::path::PathBuf,
}

impl Deployed {
    async fn start(ctx: &Ctx, name: &str, clients: Value, secrets: &[(&str, &str)]) -> Deployed {
        let mut spec = crate::support::gateway_spec(&ctx.sim.url());
        spec.config["clients"] = clients;
        spec.secrets
            .extend(secrets.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let dir = (ctx.root()).join(format!("target/e2e/{name}-{}", std::process::id()));
        let gw = Gateway::start(ctx.root(), &dir, &spec)
            .await
            .expect("gateway starts");
        Deployed { gw, dir }
    }

    fn url(&self) -> &str {
        &self.gw.url
    }

    fn stop(&mut self) {
        self.gw.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// app-a replaces its key and its signing secret without a refused request: a config listing
/// the new and the old of each is deployed (a new gateway, same upstream); the old key and the
/// new both find app-a, a token signed with either is its user's, and a response its user
/// stored before is still theirs (sealed under the old secret, which is still listed).
async fn rotation(ctx: Arc<Ctx>) {
    const NEXT_KEY: &str = "gk-app-a-next-fedcba98765";
    const NEXT_SIGNING: &str = "app-a-next-signing-secret-1a2b3c";
    let now = now_s();
    let token = |sub: &str, secret: &str| {
        let claims = json!({"iss": "app-a", "sub": sub, "iat": now, "exp": now + 300});
        mint(&claims, secret)
    };
    let body = json!({"model": "client-test", "input": "Remember 7", "max_output_tokens": 16});
    let url = format!("{}/v1/responses", ctx.url());
    let before = ctx.send(
        ctx.http
            .post(url)
            .bearer_auth(token("carol", APP_A_SIGNING))
            .json(&body),
    );
    let before = before.await;
    assert_eq!(before.status, 200, "{}", before.text);
    let id = before.json()["id"].as_str().unwrap().to_string();

    let mut clients = test_clients();
    clients["app-a"]["key_sha256"] = json!([sha256_hex(NEXT_KEY), sha256_hex(APP_A_KEY)]);
    clients["app-a"]["user_tokens"]["secret"] = json!(["APP_A_SIGNING_NEXT", "APP_A_SIGNING"]);
    let next = [("APP_A_SIGNING_NEXT", NEXT_SIGNING)];
    let mut gw = Deployed::start(&ctx, "rotation", clients, &next).await;
    let chat = format!("{}/v1/chat/completions", gw.url());
    let mut ask = chat_body("client-test", false);
    ask["max_tokens"] = json!(8);
    let send = |credential: &str| ctx.http.post(&chat).bearer_auth(credential).json(&ask);
    for credential in [
        APP_A_KEY.to_string(),
        NEXT_KEY.to_string(),
        token("carol", APP_A_SIGNING),
        token("carol", NEXT_SIGNING),
    ] {
        let r = ctx.send(send(&credential)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let stranger = ctx.send(send(&token("carol", "not-a-listed-secret"))).await;
    let e = stranger.assert_error(401);
    assert!(e["message"].as_str().unwrap().contains("signature"), "{e}");
    let retrieve = |credential: String| {
        let url = format!("{}/v1/responses/{id}", gw.url());
        ctx.send(ctx.http.get(url).bearer_auth(credential))
    };
    let kept = retrieve(token("carol", NEXT_SIGNING)).await;
    assert_eq!(
        kept.status, 200,
        "stored before, still carol's: {}",
        kept.text
    );
    assert_eq!(kept.json()["id"], json!(id));
    assert_eq!(retrieve(token("dave", NEXT_SIGNING)).await.status, 404);
    gw.stop();
}

async fn no_secret_anywhere(ctx: Arc<Ctx>) {
    let sent = ctx.recorded();
    let log = ctx.gateway_log();
    assert!(
        sent.contains("x-request-id") && sent.contains("chat.completion"),
        "the answers were recorded"
    );
    assert!(log.contains("Ready on"), "the log was captured");
    for secret in secret_values() {
        assert!(
            !sent.contains(&secret),
            "a secret ({} chars) reached a client",
            secret.len()
        );
        assert!(
            !log.contains(&secret),
            "a secret ({} chars) appears in the log",
            secret.len()
        );
    }
    // The gateway's own lines are JSON, every one.
    let ours: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("{\""))
        .collect();
    assert!(
        ours.iter().any(|l| l.contains("\"event\":\"request\"")),
        "request lines were logged"
    );
    for l in &ours {
        // Each is one whole JSON object. wrangler reporting an injected fault (hardening.rs)
        // may append its own "✘ [ERROR] Uncaught Error: ..." to the line without a break: what
        // follows the object is not the gateway's.
        let first = serde_json::Deserializer::from_str(l)
            .into_iter::<Value>()
            .next();
        assert!(matches!(first, Some(Ok(Value::Object(_)))), "not JSON: {l}");
    }
    println!(
        "    scanned {} bytes sent to clients and {} of log ({} JSON lines)",
        sent.len(),
        log.len(),
        ours.len()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Headless Chromium loads a page from another origin that uses the official `openai`
/// package with a user token (tests/browser/run.mjs); from an origin its client does not
/// allow, the browser refuses to hand the answer over.
async fn browser(ctx: Arc<Ctx>) {
    let (allowed, other) = (free_port(), free_port());
    let mut clients = test_clients();
    clients["app-a"]["origins"] = json!([format!("http://127.0.0.1:{allowed}")]);
    let mut gw = Deployed::start(&ctx, "browser", clients, &[]).await;
    let now = now_s();
    let token = mint(
        &json!({"iss": "app-a", "sub": "browser-user", "iat": now, "exp": now + 300}),
        APP_A_SIGNING,
    );
    let served_before = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]);
    let out_dir = ctx.root().join("target/e2e/browser");
    let output = tokio::process::Command::new("node")
        .arg(ctx.root().join("tests/browser/run.mjs"))
        .args(["--gateway", gw.url(), "--token", &token])
        .args([
            "--allowed-port",
            &allowed.to_string(),
            "--other-port",
            &other.to_string(),
        ])
        .arg("--out")
        .arg(&out_dir)
        .current_dir(ctx.root())
        .output()
        .await
        .expect("node runs");
    gw.stop();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let page = &result["allowed"];
    assert!(page["error"].is_null(), "the allowed page failed: {page}");
    assert!(
        !page["completion"]["text"].as_str().unwrap_or("").is_empty(),
        "{page}"
    );
    assert_eq!(
        page["completion"]["servedModel"], "qwen-turbo",
        "exposed headers are readable"
    );
    assert!(page["completion"]["requestId"]
        .as_str()
        .is_some_and(|id| id.starts_with("gw-")));
    assert_eq!(page["completion"]["limitRequests"], "20", "{page}");
    assert_eq!(page["completion"]["remainingRequests"], "19", "{page}");
    let usage = &page["usage"];
    assert_eq!(
        (&usage["status"], &usage["user"]),
        (&json!(200), &json!("browser-user"))
    );
    assert_eq!(
        (&usage["rpm"], &usage["minuteRequests"]),
        (&json!(20), &json!(1)),
        "{page}"
    );
    assert!(stat(&page["stream"], &["chunks"]) > 1, "{page}");
    assert!(
        !page["stream"]["text"].as_str().unwrap_or("").is_empty(),
        "{page}"
    );
    assert!(
        !page["response"]["text"].as_str().unwrap_or("").is_empty(),
        "{page}"
    );
    assert_eq!(
        page["response"]["gone"], true,
        "deleted from the browser: {page}"
    );
    let streamed = &page["response"]["streamed"];
    assert!(!streamed.as_str().unwrap_or("").is_empty(), "{page}");
    assert_eq!(
        *streamed, page["response"]["completedText"],
        "the deltas add up to the completed response: {page}"
    );
    let refused = &result["other"];
    assert_eq!(refused["error"]["name"], "APIConnectionError", "{refused}");
    assert!(out_dir.join("browser-allowed.png").exists());
    // Four answers for the allowed page; the other page's preflight was refused, so its
    // request never left the browser.
    let served = stat(&ctx.sim_model("acct-wide", "qwen-turbo"), &["ok"]);
    assert_eq!(served - served_before, 4);
}
