//! Pacing at real speed (no time compression: compression hides exactly these effects), with
//! the simulator's surge protection on: a burst at an idle bucket ramps up smoothly, and the
//! same burst without slow start trips the protection (so the test can fail). And a client's
//! own per-minute limit, waited for over a real minute.

use crate::gateway::GatewaySpec;
use crate::support::{sha256_hex, stat, test_secrets, Ctx, Setup, CLIENT_KEY};
use crate::Scenario;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use upstream_sim::SimConfig;

/// DashScope's published qwen3-max limits per account, with surge protection: a second may
/// hold at most twice the second before, plus three.
fn qwen3_max_limits(surge: bool) -> Value {
    let mut limits = json!({"rpm": 600, "rps": 10, "tpm": 1_000_000});
    if surge {
        limits["surge"] = json!({"floor": 3, "growth": 2.0});
    }
    limits
}

fn sim_config() -> SimConfig {
    serde_json::from_value(json!({
        "time_scale": 1.0,
        "accounts": {
            "acct-a": {"keys": ["sk-a1"], "state": "ok", "limits": {"qwen3-max": qwen3_max_limits(true)}},
            "acct-b": {"keys": ["sk-b1"], "state": "ok", "limits": {"qwen3-max": qwen3_max_limits(true)}}
        },
        "models": ["qwen3-max"],
        "completion_tokens": 8,
        "stream_chunk_delay_ms": 0
    }))
    .expect("simulator config")
}

fn gateway_spec(sim_url: &str) -> GatewaySpec {
    let base_url = format!("{sim_url}/compatible-mode/v1");
    let limits = json!({"qwen3-max": {"rpm": 600, "rps": 10, "tpm": 1_000_000}});
    let config = json!({
        "upstreams": {
            // DashScope's profile: slow start on by default.
            "dashscope": {"base_url": base_url, "profile": "dashscope"},
            "dashscope-raw": {"base_url": base_url, "profile": "dashscope", "slow_start": false}
        },
        "accounts": {
            "acct-a": {"upstream": "dashscope", "keys": ["SIM_KEY_A1"], "limits": limits},
            "acct-b": {"upstream": "dashscope-raw", "keys": ["SIM_KEY_B1"], "limits": limits}
        },
        "models": {
            "paced": {"fallback": [{"model": "qwen3-max", "accounts": ["acct-a"]}],
                      "max_wait_ms": 30_000, "deadline_ms": 60_000},
            "unpaced": {"fallback": [{"model": "qwen3-max", "accounts": ["acct-b"]}],
                        "max_wait_ms": 30_000, "deadline_ms": 60_000},
            "batch": {"fallback": [{"model": "qwen3-max", "accounts": ["acct-a"]}],
                      "max_wait_ms": 0, "deadline_ms": 90_000}
        },
        "clients": {"batch-job": {"key_sha256": sha256_hex(BATCH_KEY), "rpm": 10}}
    });
    GatewaySpec {
        config,
        secrets: test_secrets(),
    }
}

/// Real time: two accounts at DashScope's limits, one slow-started and one not.
pub const REAL_TIME: Setup = Setup {
    sim: sim_config,
    gateway: gateway_spec,
    buckets: &[("acct-a", "qwen3-max"), ("acct-b", "qwen3-max")],
    settle_ms: 2_500,
    fresh_gateway: true,
};

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "a_burst_of_100_at_an_idle_bucket_trips_no_surge_protection",
            |c| Box::pin(burst_at_idle(c)),
        ),
        ("without_slow_start_the_same_burst_trips_it", |c| {
            Box::pin(burst_unpaced(c))
        }),
        (
            "a_batch_over_its_clients_rpm_waits_a_real_minute_and_is_served_whole",
            |c| Box::pin(batch_waits_for_its_rpm(c)),
        ),
    ]
}

/// The key of the client `batch-job` (10 requests a minute).
const BATCH_KEY: &str = "gw-batch-job-key-1234";

/// Fires `n` chat requests for `model` at once; returns (statuses, seconds taken).
async fn burst(ctx: &Arc<Ctx>, model: &str, n: usize) -> (Vec<u16>, f64) {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("{}/v1/chat/completions", ctx.url());
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let body =
                json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]});
            let send = http.post(&url).bearer_auth(CLIENT_KEY).json(&body).send();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(90), send).await {
                    Ok(Ok(resp)) => resp.status().as_u16(),
                    _ => 0,
                }
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for t in tasks {
        statuses.push(t.await.unwrap_or(0));
    }
    (statuses, started.elapsed().as_secs_f64())
}

async fn burst_at_idle(ctx: Arc<Ctx>) {
    let (statuses, took) = burst(&ctx, "paced", 100).await;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let sim = ctx.sim_model("acct-a", "qwen3-max");
    assert_eq!(ok, 100, "every request answered: {statuses:?}");
    assert_eq!(
        stat(&sim, &["errors", "limit_burst_rate"]),
        0,
        "no surge 429: {sim}"
    );
    assert_eq!(
        stat(&sim, &["over_limit"]),
        0,
        "no window over its limit: {sim}"
    );
    assert!(stat(&sim, &["peak", "rps"]) <= 10, "{sim}");
    // From quiet it ramps (2 a second, then x1.5 a second) to the full 10 a second: ~12 s.
    assert!(took < 20.0, "took {took:.1} s");
    println!(
        "  100 requests at an idle bucket: {took:.1} s, peak {} rps",
        stat(&sim, &["peak", "rps"])
    );
}

async fn burst_unpaced(ctx: Arc<Ctx>) {
    let (statuses, _) = burst(&ctx, "unpaced", 100).await;
    let sim = ctx.sim_model("acct-b", "qwen3-max");
    assert!(
        stat(&sim, &["errors", "limit_burst_rate"]) > 0,
        "evenly spaced at the full rate from quiet is a surge: {sim}"
    );
    // The gateway still answers everyone: each surge 429 holds the rate and ramps back.
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok, 100, "{statuses:?}");
}

/// A batch job sends 15 requests at once over its client's 10 a minute, asking to wait up to
/// 70 s: 10 are served at once, the other 5 wait for the minute to free their slots (about
/// 60 s) and are served then; one that may wait only a second meanwhile is refused, told to
/// come back in about a minute.
async fn batch_waits_for_its_rpm(ctx: Arc<Ctx>) {
    let url = format!("{}/v1/chat/completions", ctx.url());
    let call = |max_wait_ms: u64| {
        let body =
            json!({"model": "batch", "messages": [{"role": "user", "content": "Say hello"}]});
        let request = (ctx.http.post(&url))
            .bearer_auth(BATCH_KEY)
            .header("x-gateway-max-wait-ms", max_wait_ms.to_string())
            .json(&body);
        ctx.send(request)
    };
    let started = Instant::now();
    let batch: Vec<_> = (0..15).map(|_| call(70_000)).collect();
    // The impatient one comes once the first 10 are served (slow start from idle spaces them
    // over a few seconds), so only its client's limit can refuse it.
    let (replies, impatient) = tokio::join!(futures_util::future::join_all(batch), async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        call(1_000).await
    });
    let took = started.elapsed().as_secs_f64();
    let e = impatient.assert_error(429);
    assert_eq!(e["code"], "rate_limit_exceeded", "{}", impatient.text);
    let says = e["message"].as_str().unwrap_or_default();
    assert!(says.contains("client `batch-job`"), "{says}");
    let retry_after: u64 = impatient.header("retry-after").parse().unwrap_or(0);
    assert!(
        (45..=56).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // The answers say how long each waited. (The bucket's slow start spaces the first 10
    // over a few seconds.)
    let waits = replies
        .iter()
        .filter_map(|r| r.header("x-gateway-wait-ms").parse().ok());
    let mut waited: Vec<u64> = waits.filter(|w: &u64| *w > 30_000).collect();
    waited.sort_unstable();
    assert_eq!(waited.len(), 5, "waited: {waited:?}");
    // A minute after the first 10, less the moments the batch took to arrive; at most the
    // window's margin, a granule (500 ms) and the bucket's spacing of the five more.
    assert!(
        waited.iter().all(|w| (57_000..=64_000).contains(w)),
        "waited: {waited:?}"
    );
    println!("  15 requests over a client's 10 a minute: all served in {took:.1} s, 5 waited {waited:?} ms");
}
