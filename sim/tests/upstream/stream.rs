//! Stream format, flushing per event, and client disconnect accounting.

use std::time::Duration;

use serde_json::{json, Value};
use upstream_sim::Limits;

use crate::common::*;

fn events(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"));
    text.split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").expect(e).to_string())
        .collect()
}

#[tokio::test]
async fn stream_format_matches_the_non_stream_answer() {
    let sim = start(config(Limits::default(), 1.0)).await;
    let (_, plain) = call(&sim, DS, "sk-a1", &hello("qwen-plus")).await;
    let plain: Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["choices"][0]["finish_reason"], "stop");
    assert_eq!(plain["usage"]["prompt_tokens"], 9);
    assert_eq!(plain["usage"]["total_tokens"], 21);
    let content = plain["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("Simulated "));

    for include_usage in [false, true] {
        let mut body = hello("qwen-plus");
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let resp = post(&sim, DS, "sk-a1", &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-type").unwrap(), "text/event-stream");
        assert!(header(&resp, "x-request-id").is_some());
        let text = resp.text().await.unwrap();
        let events = events(&text);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks.len(), 1 + 12 + 1 + usize::from(include_usage));
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let joined: String = chunks[1..13]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(joined, content);
        assert_eq!(chunks[13]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[13]["choices"][0]["finish_reason"], "stop");
        for c in &chunks[..14] {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert!(c["usage"].is_null());
            assert_eq!(c["id"], chunks[0]["id"]);
        }
        if include_usage {
            assert_eq!(chunks[14]["choices"], json!([]));
            assert_eq!(chunks[14]["usage"]["total_tokens"], 21);
        }
    }
    assert_eq!(model_stats(&sim, "acct-a", "qwen-plus")["ok"], 3);
}

#[tokio::test]
async fn events_are_flushed_one_by_one() {
    let mut c = config(Limits::default(), 1.0);
    c.stream_chunk_delay_ms = 20;
    let sim = start(c).await;
    let mut body = hello("qwen-plus");
    body["stream"] = json!(true);
    let (chunks, error) = chunks(post(&sim, DS, "sk-a1", &body).await).await;
    assert!(error.is_none());
    // role + 12 words + finish + [DONE], each its own chunk thanks to the delay.
    assert_eq!(chunks.len(), 15, "{chunks:?}");
    assert!(chunks[0].contains(r#""role":"assistant""#));
    assert_eq!(chunks[14], "data: [DONE]\n\n");
}

#[tokio::test]
async fn client_leaving_a_stream_is_counted() {
    let mut c = config(Limits::default(), 1.0);
    c.stream_chunk_delay_ms = 40;
    let sim = start(c).await;
    let mut body = hello("qwen-plus");
    body["stream"] = json!(true);
    let mut resp = post(&sim, DS, "sk-a1", &body).await;
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    let mut seen = 0;
    for _ in 0..100 {
        seen = sim.stats()["client_disconnects"].as_u64().unwrap();
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 1);
    // A stream read to its end is not a disconnect.
    let text = post(&sim, DS, "sk-a1", &body).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.stats()["client_disconnects"], 1);
}
