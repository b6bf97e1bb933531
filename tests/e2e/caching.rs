//! Prompt caching: a conversation's turns stay on the account holding its cache, conversations
//! still spread, and input the upstream read from its cache is priced at its share.

use crate::support::{eventually, Ctx, Reply, ADMIN_TOKEN, CLIENT_KEY};
use crate::Scenario;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "an_agents_turns_find_their_prompt_cache_and_pay_its_price",
            |c| Box::pin(agent_turns(c)),
        ),
        ("dashscope_headers_reach_dashscope_upstreams_only", |c| {
            Box::pin(dashscope_headers(c))
        }),
        ("a_responses_session_cache_is_priced_as_billed", |c| {
            Box::pin(session_cache(c))
        }),
        ("an_explicitly_cached_prompt_is_priced_as_billed", |c| {
            Box::pin(explicit_cache(c))
        }),
    ]
}

/// What DashScope bills for a call in its explicit cache's mode (its details as `details`), at
/// qwen-flash's test prices ($1 / $2 per 1M): input neither read nor written at 100 %, read
/// at 10 %, written at 125 %. The cost header as the gateway writes it, and the tokens read
/// and written.
fn billed_explicit(details: &Value, input: u64, output: u64) -> (String, u64, u64) {
    assert_eq!(details["cache_type"], "ephemeral", "{details}");
    let n = |v: &Value| v.as_u64().unwrap();
    let (read, written) = (
        n(&details["cached_tokens"]),
        n(&details["cache_creation_input_tokens"]),
    );
    let plain = input - read - written;
    let micro = plain as f64 + read as f64 * 0.1 + written as f64 * 1.25 + output as f64 * 2.0;
    (format!("{:.6}", micro / 1e6), read, written)
}

/// An agent marks its long system prompt for DashScope's explicit cache (`cache_control`, as
/// agent frameworks do): its first turn writes it (billed at 125 %), the next reads it (10 %),
/// and each answer's cost header is what DashScope bills.
async fn explicit_cache(ctx: Arc<Ctx>) {
    let system = json!({"role": "system", "content": [{"type": "text",
        "text": format!("You review diffs. Rules: {}", "Keep functions short. ".repeat(300)),
        "cache_control": {"type": "ephemeral"}}]});
    let user = json!({"role": "user", "content": "Review the diff."});
    let billed = |reply: &Reply| {
        let usage = &reply.json()["usage"];
        let n = |k: &str| usage[k].as_u64().unwrap();
        let details = &usage["prompt_tokens_details"];
        billed_explicit(details, n("prompt_tokens"), n("completion_tokens"))
    };
    let first = ctx
        .chat(&json!({"model": "cache-test", "max_tokens": 8, "messages": [system, user]}))
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let (cost, read, written) = billed(&first);
    assert_eq!((read, written > 1_000), (0, true), "the first turn writes");
    assert_eq!(first.header("x-gateway-cost-usd"), cost);
    let answer = first.json()["choices"][0]["message"].clone();
    let next = ctx
        .chat(
            &json!({"model": "cache-test", "max_tokens": 8, "messages": [system, user, answer,
            {"role": "user", "content": "Go on."}]}),
        )
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let (cost, read_next, _) = billed(&next);
    assert_eq!(
        read_next, written,
        "the next turn reads what the first wrote"
    );
    assert_eq!(next.header("x-gateway-cost-usd"), cost);
}

const ACCOUNTS: [&str; 3] = ["acct-cache1", "acct-cache2", "acct-cache3"];

/// Calls on qwen-flash, per simulator account.
fn calls(ctx: &Ctx) -> BTreeMap<&'static str, u64> {
    let calls = |a| {
        ctx.sim_model(a, "qwen-flash")["calls"]
            .as_u64()
            .unwrap_or(0)
    };
    ACCOUNTS.iter().map(|a| (*a, calls(*a))).collect()
}

/// The accounts that took calls since `before`.
fn used_since(ctx: &Ctx, before: &BTreeMap<&'static str, u64>) -> Vec<&'static str> {
    let now = calls(ctx);
    ACCOUNTS
        .into_iter()
        .filter(|a| now[a] > before[a])
        .collect()
}

async fn agent_turns(ctx: Arc<Ctx>) {
    // An agent: a long system prompt (300 tokens to the simulator, past its cache's 256), then
    // eight turns, each sending the whole conversation so far; some streamed.
    let system = json!({"role": "system", "content": format!("You are a build agent. {}", "Rules. ".repeat(170))});
    let mut messages = vec![
        system.clone(),
        json!({"role": "user", "content": "Fix the build."}),
    ];
    let before = calls(&ctx);
    let mut previous_prompt: Option<u64> = None;
    let mut last_whole: Option<(String, u64)> = None;
    let mut cached_in_all = 0;
    for turn in 0..8 {
        let stream = turn % 3 == 2;
        let mut body = json!({"model": "cache-test", "messages": messages, "max_tokens": 8});
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let reply = ctx.chat(&body).await;
        assert_eq!(reply.status, 200, "turn {turn}: {}", reply.text);
        let (usage, answer) = if stream {
            streamed(&reply.text)
        } else {
            let got = reply.json();
            let answer = got["choices"][0]["message"]["content"].clone();
            (got["usage"].clone(), answer)
        };
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0);
        // The simulator's cache holds the whole last turn (its prompt less the reply's priming).
        let expected = previous_prompt.map_or(0, |p| p - 3);
        assert_eq!(cached, expected, "turn {turn}: {usage}");
        cached_in_all += cached;
        if !stream {
            let completion = usage["completion_tokens"].as_u64().unwrap();
            let micro = (prompt - cached) as f64 + cached as f64 * 0.2 + completion as f64 * 2.0;
            assert_eq!(
                reply.header("x-gateway-cost-usd"),
                format!("{:.6}", micro / 1e6),
                "turn {turn}: the cached input at a fifth of the price"
            );
            last_whole = Some((reply.header("x-request-id").to_string(), cached));
        }
        previous_prompt = Some(prompt);
        messages.push(json!({"role": "assistant", "content": answer}));
        messages.push(json!({"role": "user", "content": format!("Step {turn} failed; go on.")}));
    }
    let used = used_since(&ctx, &before);
    assert_eq!(
        used.len(),
        1,
        "every turn on one account: {:?}",
        calls(&ctx)
    );
    // The request's log line says how much of its prompt came from the cache.
    let (id, cached) = last_whole.unwrap();
    let line = ctx.request_line(&id).await;
    let line = line.unwrap_or_else(|| panic!("a request line for {id}"));
    assert_eq!(line["cached_tokens"], cached);
    // The bucket counts it, for the dashboard and the metrics (settled off the hot path).
    let account = used[0].replace("acct-cache", "cache-");
    let counted = eventually(5, || {
        let ctx = ctx.clone();
        let account = account.clone();
        async move {
            let view = ctx.bucket(&account, "qwen-flash").await;
            view["state"]["counters"]["cached_tokens"] == cached_in_all
        }
    })
    .await;
    assert!(counted, "{}", ctx.bucket(&account, "qwen-flash").await);
    // And its daily report (two days: the run may cross a UTC midnight).
    let url = format!(
        "{}/admin/report?account={account}&model=qwen-flash&days=2",
        ctx.url()
    );
    let report = ctx.send(ctx.http.get(&url).bearer_auth(ADMIN_TOKEN)).await;
    let days = report.json()["days"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reported: u64 = days
        .iter()
        .filter_map(|d| d["cached_tokens"].as_u64())
        .sum();
    assert_eq!(reported, cached_in_all, "{}", report.text);

    // Other conversations spread over the accounts (the same system prompt, other tasks).
    let before = calls(&ctx);
    for task in 0..12 {
        let body = json!({"model": "cache-test", "max_tokens": 4, "messages": [system,
            {"role": "user", "content": format!("Task {task}: fix the tests.")}]});
        assert_eq!(ctx.chat(&body).await.status, 200);
    }
    let used = used_since(&ctx, &before);
    assert!(used.len() >= 2, "conversations spread: {:?}", calls(&ctx));

    // Many requests with one opening at once (a template, a load test) are not one
    // conversation: they spread rather than pile on one account.
    let before = calls(&ctx);
    let body = json!({"model": "cache-test", "max_tokens": 4, "messages": [system,
        {"role": "user", "content": "Classify this ticket."}]});
    let sends = (0..24).map(|_| ctx.chat(&body));
    for reply in futures_util::future::join_all(sends).await {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let used = used_since(&ctx, &before);
    assert!(used.len() >= 2, "concurrent uses spread: {:?}", calls(&ctx));

    // A client's own `prompt_cache_key` keeps different openings together.
    let before = calls(&ctx);
    for task in 0..6 {
        let body = json!({"model": "cache-test", "max_tokens": 4, "prompt_cache_key": "tenant-7",
            "messages": [{"role": "user", "content": format!("Question {task}?")}]});
        assert_eq!(ctx.chat(&body).await.status, 200);
    }
    assert_eq!(used_since(&ctx, &before).len(), 1, "{:?}", calls(&ctx));
}

/// A client's `x-dashscope-session-cache: enable` (the Responses API's session cache) goes
/// along to a DashScope upstream, and to no relay.
async fn dashscope_headers(ctx: Arc<Ctx>) {
    let asked = |account: &str| ctx.sim.stats()["accounts"][account]["session_cache"].clone();
    let send = |model: &str| {
        let body = json!({"model": model, "input": "Hello", "max_output_tokens": 4});
        with_session_cache(&ctx, body)
    };
    let reply = send("cache-test").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent: u64 = ACCOUNTS.iter().map(|a| asked(a).as_u64().unwrap()).sum();
    assert_eq!(sent, 1, "the DashScope account got the header");
    // relay-test's accounts (an OpenAI-compatible relay) use acct-b's and acct-c's keys.
    let reply = send("relay-test").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!((asked("acct-b"), asked("acct-c")), (json!(0), json!(0)));
}

/// DashScope's session cache (Responses API, `x-dashscope-session-cache: enable`): the first
/// turn writes the conversation to the cache (125 % of the input price), the next reads it
/// (10 %); the gateway's cost header says what DashScope bills.
async fn session_cache(ctx: Arc<Ctx>) {
    let send = |body: Value| with_session_cache(&ctx, body);
    // What DashScope bills for a usage: its details in `x_details`.
    let billed = |usage: &Value| {
        let details = &usage["x_details"][0]["prompt_tokens_details"];
        let n = |k: &str| usage[k].as_u64().unwrap();
        billed_explicit(details, n("input_tokens"), n("output_tokens"))
    };
    let first = send(json!({"model": "cache-test", "max_output_tokens": 8,
        "input": format!("Review this diff: {}", "+ let x = 1;\n".repeat(400))}))
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let (cost, read, written) = billed(&first.json()["usage"]);
    assert_eq!(
        (read, written > 1_000),
        (0, true),
        "the first turn writes the cache"
    );
    assert_eq!(first.header("x-gateway-cost-usd"), cost);
    let next = send(
        json!({"model": "cache-test", "max_output_tokens": 8, "input": "Go on.",
        "previous_response_id": first.json()["id"]}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text);
    let (cost, read, _) = billed(&next.json()["usage"]);
    assert!(read > 1_000, "the next turn reads it");
    assert_eq!(next.header("x-gateway-cost-usd"), cost);
}

/// A Responses API call asking for DashScope's session cache.
async fn with_session_cache(ctx: &Ctx, body: Value) -> Reply {
    let url = format!("{}/v1/responses", ctx.url());
    let req = ctx.http.post(url).bearer_auth(CLIENT_KEY).json(&body);
    ctx.send(req.header("x-dashscope-session-cache", "enable"))
        .await
}

/// A streamed answer's final usage chunk and its text.
fn streamed(text: &str) -> (Value, Value) {
    let mut usage = Value::Null;
    let mut answer = String::new();
    for event in text.split("\n\n") {
        let Some(data) = event.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            answer.push_str(piece);
        }
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
    }
    (usage, Value::String(answer))
}
