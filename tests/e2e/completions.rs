//! Text completion (`/v1/completions`) end to end: served whole and streamed through the
//! official SDK and counted, every prompt's choices reserved, a model an upstream serves for
//! chat only passed over.

use crate::support::{counters, eventually, refused_before_the_upstream, stat, Before, Ctx};
use crate::Scenario;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "text_completions_are_served_whole_and_streamed_and_counted",
            |c| Box::pin(served(c)),
        ),
        ("every_prompt_of_a_text_completion_is_reserved", |c| {
            Box::pin(prompts_reserved(c))
        }),
        (
            "a_model_without_text_completion_is_passed_over_not_parked",
            |c| Box::pin(chat_only(c)),
        ),
    ]
}

async fn served(ctx: Arc<Ctx>) {
    // As an editor's completion plugin calls it: the official SDK, a fill-in-the-middle
    // prompt, whole and streamed.
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
prompt = "<|fim_prefix|>def quick_sort(arr):<|fim_suffix|>return result<|fim_middle|>"
r = client.completions.create(model="stream-test", prompt=prompt, max_tokens=5)
print(r.model, r.object, r.usage.prompt_tokens, r.usage.completion_tokens, repr(r.choices[0].text))
text, usage, chunks = "", None, 0
for chunk in client.completions.create(model="stream-test", prompt=prompt, stream=True,
                                        stream_options={"include_usage": True}):
    chunks += 1
    if chunk.choices:
        text += chunk.choices[0].text
    if chunk.usage:
        usage = chunk.usage
print(repr(text), usage.completion_tokens)
"#;
    let out = ctx.sdk(script);
    // The prompt's 75 characters, as the simulator counts them: ceil(75 / 4); 8 words unless
    // capped.
    let whole = "qwen-turbo text_completion 19 5 'Simulated answer from the upstream'";
    let streamed = "'Simulated answer from the upstream simulator with deterministic' 8";
    assert_eq!(out.lines().collect::<Vec<_>>(), [whole, streamed], "{out}");

    // A client that did not ask for the usage chunk does not get it, and the bucket settles
    // with the usage the gateway asked for on its behalf.
    let before = Before::take(&ctx, "acct-a", "qwen-turbo").await;
    let body = json!({"model": "stream-test", "prompt": "def f(", "stream": true});
    let reply = ctx.post("completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-gateway-served-model"), "qwen-turbo");
    let chunks: Vec<Value> = reply
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(
        !chunks.is_empty() && chunks.iter().all(|c| c["usage"].is_null()),
        "no usage chunk: {}",
        reply.text
    );
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let settled = before.settled_one_as_counted_upstream(&ctx).await;
    assert!(settled, "the stream is settled with the upstream's usage");

    // Bad input is the gateway's clear 400, never sent upstream.
    let bad = [
        (json!({"model": "stream-test"}), "prompt"),
        (json!({"model": "stream-test", "prompt": {}}), "prompt"),
        (
            json!({"model": "stream-test", "prompt": "x", "best_of": 0}),
            "best_of",
        ),
    ];
    refused_before_the_upstream(&ctx, "completions", &bad).await;
}

async fn prompts_reserved(ctx: Arc<Ctx>) {
    // Each of a batch's prompts gets its own `n` choices of up to `max_tokens`: 10 requests of
    // 2 prompts x 2 choices x 8 tokens (32 out, 34 reserved) against 300 tokens a minute.
    // Reserving one choice of one prompt (10) would send all 10 at once and the upstream
    // would refuse some; reserved in full, 8 go now and 2 wait for the window to move.
    let body = json!({"model": "prompts-test", "prompt": ["hi", "yo"], "n": 2, "max_tokens": 8});
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (ctx, body) = (ctx.clone(), body.clone());
            tokio::spawn(async move { ctx.post("completions", &body).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("request task");
        assert_eq!(r.status, 200, "{}", r.text);
        let choices = r.json()["choices"].as_array().map(Vec::len);
        assert_eq!(choices, Some(4), "{}", r.text);
        assert_eq!(r.json()["usage"]["completion_tokens"], 32, "{}", r.text);
    }
    let upstream = ctx.sim_model("acct-tpm", "qwen-turbo");
    assert_eq!(upstream["over_limit"], 0, "sent over the limit: {upstream}");
    assert_eq!(upstream["ok"], 10, "{upstream}");
    let counted = eventually(10, || async {
        let c = counters(&ctx, "acct-tpm", "qwen-turbo").await;
        stat(&c, &["completion_tokens"]) == upstream["completion_tokens"].as_u64().unwrap_or(0)
    })
    .await;
    assert!(counted, "the gateway counts what the upstream counted");
}

async fn chat_only(ctx: Arc<Ctx>) {
    let body = json!({"prompt": "def f("});
    crate::responses::passed_over_not_parked(&ctx, "completions", body).await;
}
