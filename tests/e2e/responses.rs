//! The Responses API end to end: served whole and streamed through the official SDK, counted,
//! failed over before its first token, ended with an error event after it.

use crate::support::{refused_before_the_upstream, Before, Ctx, CLIENT_KEY};
use crate::Scenario;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("responses_are_served_whole_and_streamed_and_counted", |c| {
            Box::pin(served(c))
        }),
        ("a_responses_stream_fails_over_or_ends_with_an_error", |c| {
            Box::pin(failures(c))
        }),
        (
            "a_model_without_the_responses_api_is_passed_over_not_parked",
            |c| Box::pin(chat_only(c)),
        ),
        (
            "a_follow_up_goes_back_to_the_account_that_stored_its_response",
            |c| Box::pin(follow_ups(c)),
        ),
        (
            "a_stored_response_is_retrieved_listed_and_deleted_at_its_account",
            |c| Box::pin(stored(c)),
        ),
    ]
}

async fn respond(ctx: &Ctx, body: Value) -> crate::support::Reply {
    ctx.post("responses", &body).await
}

/// The `data:` payloads of a stream, parsed.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn delta_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect()
}

async fn served(ctx: Arc<Ctx>) {
    // As DashScope's docs call it: the official SDK, a string input, then a stream.
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
r = client.responses.create(model="stream-test", input="Say hello", instructions="Be brief.", max_output_tokens=5)
print(r.model, r.status, r.usage.input_tokens, r.usage.output_tokens, repr(r.output_text))
text, done = "", None
for event in client.responses.create(model="stream-test", input=[{"role": "user", "content": "Say hello"}], stream=True):
    if event.type == "response.output_text.delta":
        text += event.delta
    elif event.type == "response.completed":
        done = event.response
print(repr(text), done.status, done.usage.output_tokens, repr(done.output_text))
"#;
    let out = ctx.sdk(script);
    let lines: Vec<&str> = out.lines().collect();
    // (4 + 3) + (4 + 3) + 3 in, as the simulator counts the same chat.
    assert_eq!(
        lines.first().copied(),
        Some("qwen-turbo completed 17 5 'Simulated answer from the upstream'"),
        "{out}"
    );
    // The simulator answers 8 words unless capped.
    let answer = "'Simulated answer from the upstream simulator with deterministic'";
    assert_eq!(
        lines.get(1).copied(),
        Some(format!("{answer} completed 8 {answer}").as_str()),
        "{out}"
    );

    // The headers, and the counting: the bucket settles with the upstream's usage.
    let before = Before::take(&ctx, "acct-a", "qwen-turbo").await;
    let reply = respond(
        &ctx,
        json!({"model": "stream-test", "input": "Hi", "stream": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-requested-model"), "stream-test");
    assert_eq!(reply.header("x-gateway-served-model"), "qwen-turbo");
    let got = events(&reply.text);
    assert_eq!(
        got.last().map(|e| e["type"].clone()),
        Some(json!("response.completed")),
        "{}",
        reply.text
    );
    assert!(
        !reply.text.contains("stream_options") && !reply.text.contains("[DONE]"),
        "{}",
        reply.text
    );
    assert!(
        before.settled_one_as_counted_upstream(&ctx).await,
        "the stream is settled with the upstream's usage, not the estimate"
    );

    // Bad input is the gateway's clear 400, never sent upstream.
    let bad = [
        (json!({"model": "stream-test"}), "input"),
        (
            json!({"model": "stream-test", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "stream-test", "input": "x", "max_output_tokens": "9"}),
            "max_output_tokens",
        ),
    ];
    refused_before_the_upstream(&ctx, "responses", &bad).await;
}

async fn failures(ctx: Arc<Ctx>) {
    let body = json!({"model": "stream-test", "input": "Say hello", "stream": true});
    // Before the first token: an `error` event, or `response.failed`, from acct-a; acct-b
    // answers and the client never sees it.
    for shape in ["compat", "native"] {
        ctx.reset(false).await;
        let fault = json!({"kind": "stream_error", "shape": shape, "after_chunks": 0,
            "account": "acct-a", "code": "rate_limit_exceeded", "message": "Rate limit reached"});
        ctx.sim.push_fault(fault.clone()).unwrap();
        let reply = respond(&ctx, body.clone()).await;
        assert_eq!(reply.status, 200, "{fault}: {}", reply.text);
        let got = events(&reply.text);
        assert!(
            got.iter().all(|e| e["type"] != "error"
                && e["type"] != "response.failed"
                && e["error"].is_null()),
            "{fault}: the client sees no error: {}",
            reply.text
        );
        assert_eq!(reply.header("x-gateway-attempts"), "2", "{fault}");
        assert_eq!(ctx.sim_model("acct-b", "qwen-turbo")["ok"], 1, "{fault}");
        assert_eq!(
            got.last().map(|e| e["type"].clone()),
            Some(json!("response.completed"))
        );
    }

    // After it: the words so far, then an error event the SDK raises, never a hang.
    for shape in ["compat", "native"] {
        let fault = json!({"kind": "stream_error", "shape": shape, "after_chunks": 3, "times": 0});
        ctx.sim.push_fault(fault.clone()).unwrap();
        let reply = respond(&ctx, body.clone()).await;
        assert_eq!(reply.status, 200, "committed after the first token");
        let got = events(&reply.text);
        assert_eq!(
            delta_text(&got),
            "Simulated answer from ",
            "{fault}: {}",
            reply.text
        );
        let last = got.last().cloned().unwrap_or_default();
        assert!(
            last["error"]["message"].is_string(),
            "{fault}: ends with an error event: {}",
            reply.text
        );
        let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0, timeout=20)
text = ""
try:
    for event in client.responses.create(model="stream-test", input="Say hello", stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
    print("no error")
except openai.APITimeoutError:
    print("hung")
except openai.APIError:
    print("APIError after", repr(text))
"#;
        let out = ctx.sdk(script);
        assert_eq!(
            out.trim(),
            "APIError after 'Simulated answer from '",
            "{fault}"
        );
        ctx.clear_faults().await;
    }
}

async fn chat_only(ctx: Arc<Ctx>) {
    passed_over_not_parked(&ctx, "responses", json!({"input": "Say hello"})).await;
}

/// qwen-plus is served for chat only (the simulator's `chat_only`, `completion_models`): a
/// request to `/v1/<path>` with `body` goes on to qwen-turbo and says why, the isolate then
/// makes no call to qwen-plus, chat there is unaffected, and where no step serves it the
/// answer is a 404.
pub async fn passed_over_not_parked(ctx: &Ctx, path: &str, body: Value) {
    let with_model = |model: &str| {
        let mut body = body.clone();
        body["model"] = json!(model);
        body
    };
    let reply = ctx.post(path, &with_model("chat-first")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-served-model"), "qwen-turbo");
    assert_eq!(
        reply.header("x-gateway-fallback-reason"),
        "qwen-plus:unsupported"
    );
    // The isolate remembers: the next one goes straight to qwen-turbo (one isolate under
    // wrangler dev), without a call to qwen-plus.
    let calls = ctx.sim_model("acct-c", "qwen-plus")["calls"].clone();
    let again = ctx.post(path, &with_model("chat-first")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("x-gateway-attempts"), "1");
    assert_eq!(
        again.header("x-gateway-fallback-reason"),
        "qwen-plus:unsupported"
    );
    assert_eq!(ctx.sim_model("acct-c", "qwen-plus")["calls"], calls);
    // The bucket chat shares is not parked: chat is still served by qwen-plus.
    let chat = ctx
        .chat(&json!({"model": "chat-first", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text);
    assert_eq!(chat.header("x-gateway-served-model"), "qwen-plus");
    let state = &ctx.bucket("acct-c", "qwen-plus").await["state"];
    assert_eq!(state["parked"], Value::Null, "not parked: {state}");
    // Nothing serves it there: a 404 the SDKs do not retry.
    let reply = ctx.post(path, &with_model("chat-only")).await;
    let error = reply.assert_error(404);
    assert_eq!(error["code"], "model_not_supported", "{}", reply.text);
    assert_eq!(reply.header("x-should-retry"), "false");
}

async fn follow_ups(ctx: Arc<Ctx>) {
    // Two accounts of equal weight serve follow-test, and each keeps its own responses: a
    // chain of follow-ups
    // (as an app keeping its conversation upstream sends them) must each reach the first's.
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
r = client.responses.create(model="follow-test", input="Say hello")
ids = [r.id]
for _ in range(6):
    r = client.responses.create(model="follow-test", input="And then?", previous_response_id=r.id)
    ids.append(r.id)
done = None
for event in client.responses.create(model="follow-test", input="And then?", previous_response_id=r.id, stream=True):
    if event.type == "response.completed":
        done = event.response
ids.append(done.id)
r = client.responses.create(model="follow-test", input="Last", previous_response_id=done.id)
ids.append(r.id)
print(len(set(ids)), len({i.rsplit(".gw", 1)[1] for i in ids}), r.status)
"#;
    assert_eq!(ctx.sdk(script).trim(), "9 1 completed");
    let served: Vec<u64> = ["acct-b", "acct-c"]
        .iter()
        .map(|a| ctx.sim_model(a, "qwen-turbo")["ok"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        served.contains(&9) && served.contains(&0),
        "one account served them all: {served:?}"
    );
    // An id the gateway did not hand out goes anywhere, and the upstream's refusal is the
    // client's to fix: a 400, and no account is parked for it.
    let reply = respond(
        &ctx,
        json!({"model": "follow-test", "input": "x", "previous_response_id": "resp_unknown"}),
    )
    .await;
    let error = reply.assert_error(400);
    assert_eq!(
        error["code"], "previous_response_not_found",
        "{}",
        reply.text
    );
    for account in ["acct-b", "acct-c"] {
        let state = &ctx.bucket(account, "qwen-turbo").await["state"];
        assert_eq!(state["parked"], Value::Null, "{account}: {state}");
    }
}

async fn stored(ctx: Arc<Ctx>) {
    // Through the official SDK, several times over so both accounts hold some.
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
out = []
for i in range(4):
    r = client.responses.create(model="follow-test", input=f"Remember {i}")
    got = client.responses.retrieve(r.id)
    items = client.responses.input_items.list(r.id)
    client.responses.delete(r.id)
    try:
        client.responses.retrieve(r.id)
        gone = "kept"
    except openai.NotFoundError:
        gone = "gone"
    out.append(f"{got.id == r.id} {got.output_text == r.output_text} {items.data[0].content} {gone}")
print("\n".join(out))
"#;
    let out = ctx.sdk(script);
    let want: Vec<String> = (0..4)
        .map(|i| format!("True True Remember {i} gone"))
        .collect();
    assert_eq!(out.trim(), want.join("\n"));
    let served: Vec<u64> = ["acct-b", "acct-c"]
        .iter()
        .map(|a| ctx.sim_model(a, "qwen-turbo")["ok"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(served.iter().sum::<u64>(), 4, "{served:?}");
    // An id the gateway did not hand out, or one of an account it has not: 404, OpenAI-shaped.
    for id in ["resp_unknown", "resp_1.gw00000000"] {
        let reply = ctx
            .send(
                ctx.http
                    .get(format!("{}/v1/responses/{id}", ctx.url()))
                    .bearer_auth(CLIENT_KEY),
            )
            .await;
        reply.assert_error(404);
    }
    // A client key is needed, as for every /v1 call.
    let anonymous = ctx
        .send(ctx.http.get(format!("{}/v1/responses/resp_1", ctx.url())))
        .await;
    anonymous.assert_error(401);
}
