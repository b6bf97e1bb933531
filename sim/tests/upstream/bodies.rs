//! Error bodies are byte-for-byte the documented ones; headers follow the dialect.

use serde_json::json;
use upstream_sim::{AccountState, Burst, Limits, SimConfig};

use crate::common::*;

// Copied verbatim from docs/upstream-errors.md.
const DOC_TOKEN_QUOTA: &str = r#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota, please check your plan and billing details. For details, see: https://help.aliyun.com/zh/model-studio/error-code#token-limit","param":null,"type":"insufficient_quota"},"request_id":"57553be3-dea8-49f1-ba1e-7a820c152999"}"#;
const DOC_LIMIT_REQUESTS: &str = r#"{"error":{"message":"You have exceeded your current request limit. For details, see: https://help.aliyun.com/zh/model-studio/error-code#rate-limit","type":"limit_requests","code":"limit_requests"}}"#;
const DOC_BURST: &str = r#"{"error":{"message":"Request rate increased too quickly. To ensure system stability, please adjust your client logic to scale requests more smoothly over time.","type":"limit_burst_rate","param":"","code":"limit_burst_rate"}}"#;
const DOC_FREE_TIER_ONLY: &str = r#"{"error":{"message":"The free quota has been exhausted. To continue accessing the model on a paid basis, please complete your payment information.","type":"AllocationQuota.FreeTierOnly","param":null,"code":"AllocationQuota.FreeTierOnly"}}"#;
const DOC_ARREARAGE: &str = r#"{"error":{"message":"Access denied, please make sure your account is in good standing. For details, see: https://help.aliyun.com/zh/model-studio/error-code#overdue-payment","type":"Arrearage","param":null,"code":"Arrearage"},"request_id":"8605e472-81b4-9cd7-b04d-878e89847c14"}"#;
const DOC_INVALID_KEY: &str = r#"{"error":{"message":"Incorrect API key provided. For details, see: https://help.aliyun.com/zh/model-studio/error-code#apikey-error","type":"invalid_request_error","param":null,"code":"invalid_api_key"},"request_id":"6176caaa-9844-9311-b869-fe2dce75313a"}"#;
// Modelled (unverified) bodies, as the brief specifies them.
const FREE_QUOTA: &str = r#"{"error":{"code":"insufficient_quota","message":"Free allocated quota exceeded.","param":null,"type":"insufficient_quota"},"request_id":"<id>"}"#;
const OVERDUE: &str = r#"{"error":{"message":"The prepaid bill is overdue.","type":"PrepaidBillOverdue","param":null,"code":"PrepaidBillOverdue"},"request_id":"<id>"}"#;

fn states_config() -> SimConfig {
    let mut c = config(Limits::default(), 1.0);
    let none = Limits::default;
    add_account(
        &mut c,
        "free",
        &["sk-free"],
        AccountState::FreeQuotaExhausted,
        none(),
    );
    add_account(
        &mut c,
        "tier",
        &["sk-tier"],
        AccountState::FreeTierOnly,
        none(),
    );
    add_account(
        &mut c,
        "arrears",
        &["sk-arr"],
        AccountState::Arrears,
        none(),
    );
    add_account(
        &mut c,
        "overdue",
        &["sk-over"],
        AccountState::Overdue,
        none(),
    );
    let rpm = Limits {
        rpm: Some(1),
        ..none()
    };
    add_account(&mut c, "rpm", &["sk-rpm"], AccountState::Ok, rpm);
    let burst = Limits {
        burst: Some(Burst {
            requests: 1,
            window_ms: 60_000,
        }),
        ..none()
    };
    add_account(&mut c, "burst", &["sk-burst"], AccountState::Ok, burst);
    let tpm = Limits {
        tpm: Some(10),
        ..none()
    };
    add_account(&mut c, "tpm", &["sk-tpm"], AccountState::Ok, tpm);
    c
}

/// Asserts `body` equals `doc` once the doc's request_id value is replaced by the answer's.
fn assert_doc_body(body: &str, doc: &str, doc_id: &str) {
    let id = request_id(body);
    assert_eq!(body, doc.replace(doc_id, &id));
}

#[tokio::test]
async fn dashscope_bodies_are_the_documented_bytes() {
    let sim = start(states_config()).await;
    let m = hello("qwen3-max");

    let resp = post(&sim, DS, "sk-unknown", &m).await;
    assert_eq!(resp.status(), 401);
    let id = header(&resp, "x-request-id").unwrap();
    let body = resp.text().await.unwrap();
    assert_doc_body(
        &body,
        DOC_INVALID_KEY,
        "6176caaa-9844-9311-b869-fe2dce75313a",
    );
    assert_eq!(request_id(&body), id);

    let (status, body) = call(&sim, DS, "sk-arr", &m).await;
    assert_eq!(status, 400);
    assert_doc_body(&body, DOC_ARREARAGE, "8605e472-81b4-9cd7-b04d-878e89847c14");

    let (status, body) = call(&sim, DS, "sk-tier", &m).await;
    assert_eq!((status, body.as_str()), (403, DOC_FREE_TIER_ONLY));

    let (status, body) = call(&sim, DS, "sk-free", &m).await;
    assert_eq!(status, 429);
    assert_doc_body(&body, FREE_QUOTA, "<id>");

    let (status, body) = call(&sim, DS, "sk-over", &m).await;
    assert_eq!(status, 429);
    assert_doc_body(&body, OVERDUE, "<id>");

    assert_eq!(call(&sim, DS, "sk-rpm", &m).await.0, 200);
    let (status, body) = call(&sim, DS, "sk-rpm", &m).await;
    assert_eq!((status, body.as_str()), (429, DOC_LIMIT_REQUESTS));

    assert_eq!(call(&sim, DS, "sk-burst", &m).await.0, 200);
    let (status, body) = call(&sim, DS, "sk-burst", &m).await;
    assert_eq!((status, body.as_str()), (429, DOC_BURST));

    // 9 prompt tokens fit in 10; the second request finds 21 used.
    assert_eq!(call(&sim, DS, "sk-tpm", &m).await.0, 200);
    let (status, body) = call(&sim, DS, "sk-tpm", &m).await;
    assert_eq!(status, 429);
    assert_doc_body(
        &body,
        DOC_TOKEN_QUOTA,
        "57553be3-dea8-49f1-ba1e-7a820c152999",
    );

    let stats = sim.stats();
    let errors = |acct: &str| stats["accounts"][acct]["models"]["qwen3-max"]["errors"].clone();
    assert_eq!(errors("free")["free_quota"], 1);
    assert_eq!(errors("tier")["free_tier_only"], 1);
    assert_eq!(errors("arrears")["arrearage"], 1);
    assert_eq!(errors("overdue")["overdue"], 1);
    assert_eq!(errors("rpm")["limit_requests"], 1);
    assert_eq!(errors("burst")["limit_burst_rate"], 1);
    assert_eq!(errors("tpm")["insufficient_quota"], 1);
    assert_eq!(stats["unauthorized"], 1);
}

#[tokio::test]
async fn dashscope_headers_and_no_retry_hints() {
    let sim = start(states_config()).await;
    let m = hello("qwen3-max");
    post(&sim, DS, "sk-rpm", &m).await;
    let resp = post(&sim, DS, "sk-rpm", &m).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "content-type").unwrap(), "application/json");
    assert_eq!(header(&resp, "x-dashscope-call-gateway").unwrap(), "true");
    assert_eq!(header(&resp, "server").unwrap(), "istio-envoy");
    assert!(header(&resp, "req-cost-time")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    let id = header(&resp, "x-request-id").unwrap();
    assert_eq!(
        id.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    for absent in [
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-limit-requests",
    ] {
        assert!(header(&resp, absent).is_none(), "{absent}");
    }
}

#[tokio::test]
async fn openai_dialect_bodies() {
    let sim = start(states_config()).await;
    let m = hello("qwen3-max");
    let (status, body) = call(&sim, OA, "sk-a1-secret", &m).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        r#"{"error":{"message":"Incorrect API key provided: sk-a1***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
    );
    let (status, body) = call(&sim, OA, "sk-free", &m).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#
    );
    let (status, body) = call(&sim, OA, "sk-a1", &hello("gpt-9")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#
    );
    let (status, body) = call(&sim, DS, "sk-a1", &hello("gpt-9")).await;
    assert_eq!(status, 404);
    let id = request_id(&body);
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}},"request_id":"{id}"}}"#
        )
    );
    let (status, body) = call(&sim, DS, "sk-a1", &json!({"model": "qwen3-max"})).await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_parameter_error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("messages"));
    let (status, body) = call(&sim, OA, "sk-a1", &json!({"messages": [{}]})).await;
    assert_eq!(status, 400);
    assert!(!body.contains("request_id"));
    assert_eq!(sim.stats()["accounts"]["acct-a"]["invalid_requests"], 4);
}
