//! Every fault kind, fault matchers and counts, and that faults occupy no window.

use std::time::{Duration, Instant};

use serde_json::json;
use upstream_sim::Limits;

use crate::common::*;

fn stream_body(model: &str) -> serde_json::Value {
    let mut b = hello(model);
    b["stream"] = json!(true);
    b
}

#[tokio::test]
async fn status_faults_use_the_dialect_bodies() {
    let sim = start(config(
        Limits {
            rpm: Some(1),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    sim.push_fault(json!([
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 502, "body": "upstream broke"},
        {"kind": "status", "status": 500}
    ]))
    .unwrap();
    let (status, body) = call(&sim, DS, "sk-a1", &m).await;
    assert_eq!(status, 500);
    let id = request_id(&body);
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"message":"An internal error has occured, please try again later or contact service support.","type":"InternalError","param":null,"code":"InternalError"}},"request_id":"{id}"}}"#
        )
    );
    let (status, body) = call(&sim, DS, "sk-a1", &m).await;
    assert_eq!(status, 503);
    let id = request_id(&body);
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"message":"Too many requests. The requests have exceeded the system capacity limits. Please try again later.","type":"ModelServingError","param":null,"code":"ModelServingError"}},"request_id":"{id}"}}"#
        )
    );
    assert_eq!(
        call(&sim, DS, "sk-a1", &m).await,
        (502, "upstream broke".to_string())
    );
    let (status, body) = call(&sim, OA, "sk-a1", &m).await;
    assert_eq!(status, 500);
    assert!(body.contains("InternalError") && !body.contains("request_id"));
    // None of the four faulted requests took the single RPM slot.
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    let a = model_stats(&sim, "acct-a", "qwen3-max");
    assert_eq!(a["errors"]["fault"], 4);
    assert_eq!(a["calls"], 5);
    assert_eq!(a["peak"]["rpm"], 1);
}

#[tokio::test]
async fn delay_then_normal_answer() {
    let sim = start(config(Limits::default(), 1.0)).await;
    // Delays long beside a loopback call's, so a loaded machine cannot blur them.
    sim.push_fault(json!({"kind": "delay", "ms": 1000}))
        .unwrap();
    let t = Instant::now();
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen3-max")).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(1000));
    let t = Instant::now();
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen3-max")).await.0, 200);
    assert!(t.elapsed() < Duration::from_millis(1000));
    assert_eq!(
        model_stats(&sim, "acct-a", "qwen3-max")["errors"]["fault"],
        0
    );
}

#[tokio::test]
async fn reset_closes_without_an_answer() {
    let sim = start(config(Limits::default(), 1.0)).await;
    sim.push_fault(json!({"kind": "reset"})).unwrap();
    let err = client()
        .post(format!("{}{DS}/chat/completions", sim.url()))
        .bearer_auth("sk-a1")
        .json(&hello("qwen3-max"))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none());
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen3-max")).await.0, 200);
}

#[tokio::test]
async fn stream_error_frames_are_exact() {
    let sim = start(config(Limits::default(), 1.0)).await;
    sim.push_fault(json!({"kind": "stream_error", "shape": "compat", "after_chunks": 2}))
        .unwrap();
    let text = post(&sim, DS, "sk-a1", &stream_body("qwen3-max"))
        .await
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(events.len(), 4, "{text}");
    assert!(events[0].contains(r#""delta":{"role":"assistant","content":""}"#));
    assert!(events[1].contains(r#""delta":{"content":"Simulated "}"#));
    assert!(events[2].contains(r#""delta":{"content":"answer "}"#));
    assert_eq!(events[3], "data: {\"error\":{\"message\":\"Output data may contain inappropriate content.\",\"type\":\"data_inspection_failed\",\"param\":null,\"code\":\"data_inspection_failed\"}}\n\n");

    sim.push_fault(json!({"kind": "stream_error", "shape": "native", "after_chunks": 0}))
        .unwrap();
    let resp = post(&sim, DS, "sk-a1", &stream_body("qwen3-max")).await;
    assert_eq!(resp.status(), 200);
    let id = header(&resp, "x-request-id").unwrap();
    let text = resp.text().await.unwrap();
    assert_eq!(text, format!("id:1\nevent:error\n:HTTP_STATUS/429\ndata:{{\"request_id\":\"{id}\",\"code\":\"Throttling.AllocationQuota\",\"message\":\"Allocated quota exceeded, please increase your quota limit.\"}}\n\n"));

    sim.push_fault(json!({"kind": "stream_error", "after_chunks": 1,
        "code": "internal_error", "message": "boom"}))
        .unwrap();
    let text = post(&sim, DS, "sk-a1", &stream_body("qwen3-max"))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: {\"error\":{\"message\":\"boom\",\"type\":\"internal_error\",\"param\":null,\"code\":\"internal_error\"}}\n\n"));
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn stream_faults_skip_non_stream_requests() {
    let sim = start(config(Limits::default(), 1.0)).await;
    sim.push_fault(json!({"kind": "stream_cut", "after_chunks": 1}))
        .unwrap();
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen3-max")).await.0, 200);
    let (_, error) = chunks(post(&sim, DS, "sk-a1", &stream_body("qwen3-max")).await).await;
    assert!(error.is_some());
}

#[tokio::test]
async fn stream_cut_ends_the_body_abnormally() {
    let sim = start(config(Limits::default(), 1.0)).await;
    sim.push_fault(json!({"kind": "stream_cut", "after_chunks": 3}))
        .unwrap();
    let resp = post(&sim, DS, "sk-a1", &stream_body("qwen3-max")).await;
    assert_eq!(resp.status(), 200);
    let (chunks, error) = chunks(resp).await;
    let error = error.expect("a cut stream must end in an error");
    assert!(
        error.is_body() || error.is_decode() || error.is_request(),
        "{error:?}"
    );
    let text = chunks.concat();
    assert_eq!(text.matches("data: ").count(), 4, "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(sim.stats()["client_disconnects"], 0);

    // With no chunk at all the status still arrives, then the body fails.
    for _ in 0..5 {
        sim.push_fault(json!({"kind": "stream_cut", "after_chunks": 0}))
            .unwrap();
        let resp = post(&sim, OA, "sk-a1", &stream_body("qwen3-max")).await;
        assert_eq!(resp.status(), 200);
        let (got, error) = crate::common::chunks(resp).await;
        assert!(error.is_some() && got.concat().is_empty(), "{got:?}");
    }
}

#[tokio::test]
async fn slow_first_token_delays_the_first_event_not_the_headers() {
    let sim = start(config(Limits::default(), 1.0)).await;
    // Delays long beside a loopback call's, so a loaded machine cannot blur them.
    sim.push_fault(json!({"kind": "slow_first_token", "ms": 1200}))
        .unwrap();
    let t = Instant::now();
    let mut resp = post(&sim, DS, "sk-a1", &stream_body("qwen3-max")).await;
    let headers_at = t.elapsed();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = t.elapsed();
    assert!(headers_at < Duration::from_millis(1000), "{headers_at:?}");
    assert!(first_at >= Duration::from_millis(1200), "{first_at:?}");
    assert!(String::from_utf8_lossy(&first).contains("assistant"));

    sim.push_fault(json!({"kind": "slow_first_token", "ms": 300}))
        .unwrap();
    let t = Instant::now();
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen3-max")).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn matchers_times_and_clearing() {
    let sim = start(config(Limits::default(), 1.0)).await;
    let m = hello("qwen3-max");
    sim.push_fault(json!({"kind": "status", "status": 500, "account": "acct-b", "times": 2}))
        .unwrap();
    sim.push_fault(
        json!({"kind": "status", "status": 503, "key": "sk-a2", "model": "qwen-plus", "times": 0}),
    )
    .unwrap();
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-b1", &m).await.0, 500);
    assert_eq!(call(&sim, DS, "sk-b1", &m).await.0, 500);
    assert_eq!(call(&sim, DS, "sk-b1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a2", &m).await.0, 200);
    for _ in 0..3 {
        assert_eq!(call(&sim, DS, "sk-a2", &hello("qwen-plus")).await.0, 503);
    }
    let resp = client()
        .delete(format!("{}/_sim/faults", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(call(&sim, DS, "sk-a2", &hello("qwen-plus")).await.0, 200);
    assert!(sim.push_fault(json!({"kind": "nope"})).is_err());
}

#[tokio::test]
async fn a_client_leaving_a_delayed_answer_is_counted() {
    let sim = start(config(Limits::default(), 1.0)).await;
    sim.push_fault(json!({"kind": "delay", "ms": 2_000}))
        .unwrap();
    let url = format!("{}{DS}/chat/completions", sim.url());
    let gave_up = client()
        .post(url)
        .bearer_auth("sk-a1")
        .json(&hello("qwen3-max"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    let deadline = Instant::now() + Duration::from_secs(2);
    while sim.stats()["client_disconnects"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.stats()["client_disconnects"], 1, "{}", sim.stats());
    assert_eq!(
        model_stats(&sim, "acct-a", "qwen3-max")["ok"],
        0,
        "never answered"
    );
}
