//! Limits: shared per account across keys, separate per account, sliding windows, accounting.

use std::time::Duration;

use upstream_sim::Limits;

use crate::common::*;

#[tokio::test]
async fn rpm_is_shared_by_the_keys_of_an_account_only() {
    let sim = start(config(
        Limits {
            rpm: Some(2),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a2", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a2", &m).await.0, 429);
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 429);
    // Another account has its own budget, and another model is not limited.
    assert_eq!(call(&sim, DS, "sk-b1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen-plus")).await.0, 200);

    let a = model_stats(&sim, "acct-a", "qwen3-max");
    assert_eq!(a["calls"], 4);
    assert_eq!(a["ok"], 2);
    assert_eq!(a["errors"]["limit_requests"], 2);
    assert_eq!(a["over_limit"], 2);
    assert_eq!(a["peak"]["rpm"], 4);
    assert_eq!(a["limits"]["rpm"], 2);
    assert_eq!(model_stats(&sim, "acct-b", "qwen3-max")["ok"], 1);
    let stats = sim.stats();
    assert_eq!(stats["keys"]["sk-a1"]["calls"], 3);
    assert_eq!(stats["keys"]["sk-a2"]["calls"], 2);
    assert_eq!(stats["total_calls"], 6);
}

#[tokio::test]
async fn rpm_window_slides_in_compressed_time() {
    // 60x: the 60 s window lasts one real second.
    let sim = start(config(
        Limits {
            rpm: Some(2),
            ..Limits::default()
        },
        60.0,
    ))
    .await;
    let m = hello("qwen3-max");
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    let a = model_stats(&sim, "acct-a", "qwen3-max");
    assert_eq!(
        (a["ok"].as_u64(), a["over_limit"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(a["peak"]["rpm"], 3);
}

#[tokio::test]
async fn rps_limits_within_a_second() {
    let sim = start(config(
        Limits {
            rps: Some(2),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a2", &m).await.0, 200);
    let (status, body) = call(&sim, DS, "sk-a1", &m).await;
    assert_eq!(status, 429);
    assert!(body.contains("limit_requests"));
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    let a = model_stats(&sim, "acct-a", "qwen3-max");
    assert_eq!(a["peak"]["rps"], 3);
    assert_eq!(a["peak"]["rpm"], 4);
}

#[tokio::test]
async fn tpm_counts_prompt_and_completion() {
    let sim = start(config(
        Limits {
            tpm: Some(50),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    // Each answer occupies 9 + 12 = 21 tokens; the third finds 42 + 9 > 50.
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a2", &m).await.0, 200);
    let (status, body) = call(&sim, DS, "sk-a1", &m).await;
    assert_eq!(status, 429);
    assert!(body.contains("insufficient_quota"));
    let a = model_stats(&sim, "acct-a", "qwen3-max");
    assert_eq!(a["prompt_tokens"], 18);
    assert_eq!(a["completion_tokens"], 24);
    assert_eq!(a["peak"]["tpm"], 42);
    assert_eq!(a["peak"]["tps"], 42);
    assert_eq!(a["errors"]["insufficient_quota"], 1);
    assert_eq!(a["over_limit"], 1);
}

#[tokio::test]
async fn unlimited_traffic_records_peaks_without_over_limit() {
    let sim = start(config(Limits::default(), 1.0)).await;
    let m = serde_json::json!({"model": "qwen3-max", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hello"}]});
    for _ in 0..5 {
        assert_eq!(call(&sim, DS, "sk-b1", &m).await.0, 200);
    }
    let b = model_stats(&sim, "acct-b", "qwen3-max");
    assert_eq!(b["peak"]["rpm"], 5);
    assert_eq!(b["peak"]["rps"], 5);
    assert_eq!(b["peak"]["tpm"], 55);
    assert_eq!(b["completion_tokens"], 10);
    assert_eq!(b["over_limit"], 0);
}

#[tokio::test]
async fn openai_dialect_429_carries_retry_hints() {
    let limits = Limits {
        rpm: Some(2),
        tpm: Some(1000),
        ..Limits::default()
    };
    let sim = start(config(limits, 1.0)).await;
    let m = hello("qwen3-max");
    let ok = post(&sim, OA, "sk-a1", &m).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-ratelimit-limit-requests").unwrap(), "2");
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests").unwrap(), "1");
    assert_eq!(header(&ok, "x-ratelimit-limit-tokens").unwrap(), "1000");
    assert_eq!(header(&ok, "x-ratelimit-remaining-tokens").unwrap(), "979");
    assert!(header(&ok, "x-ratelimit-reset-requests")
        .unwrap()
        .ends_with('s'));
    assert!(header(&ok, "retry-after").is_none());
    assert!(header(&ok, "x-dashscope-call-gateway").is_none());
    assert_eq!(post(&sim, OA, "sk-a2", &m).await.status(), 200);

    let refused = post(&sim, OA, "sk-a1", &m).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after").unwrap(), "60");
    let ms: f64 = header(&refused, "retry-after-ms").unwrap().parse().unwrap();
    assert!(ms > 59_000.0 && ms <= 60_000.0, "{ms}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests").unwrap(),
        "0"
    );
    let reset = header(&refused, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.starts_with("59.") || reset == "1m0s", "{reset}");
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for requests on model qwen3-max in organization org-sim: Limit 2, Used 2, Requested 1. Please try again in "),
        "{message}"
    );
    assert!(message.ends_with("ms."));
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body.get("request_id").is_none());
}

#[tokio::test]
async fn openai_token_limit_message() {
    let sim = start(config(
        Limits {
            tpm: Some(25),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    assert_eq!(call(&sim, OA, "sk-a1", &m).await.0, 200);
    let resp = post(&sim, OA, "sk-a1", &m).await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after-ms").is_some());
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("for tokens on model qwen3-max"),
        "{message}"
    );
    assert!(message.contains("Limit 25, Used 21, Requested 9. Please try again in "));
    assert_eq!(body["error"]["type"], "tokens");
}
