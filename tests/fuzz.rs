//! Host fuzzing of everything that reads outside input: the chat-request parser, the SSE
//! parser, config loading, classification of upstream answers and routing. Generated and
//! mutated inputs (mutations of real examples); no input may panic, and every rejection a
//! client could see must be an OpenAI-shaped error. Prints how many inputs ran.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use edge_gateway::affinity;
use edge_gateway::classify::{classify, classify_stream_error, Outcome};
use edge_gateway::config::{Config, Profile};
use edge_gateway::hints::MAX_HINT_MS;
use edge_gateway::openai::{ApiError, ApiRequest, Endpoint};
use edge_gateway::routes;
use edge_gateway::sse::{self, Frame, SseParser};
use edge_gateway::tokens;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::Value;

/// Inputs per target; five targets.
const CASES: u32 = 24_000;

/// Asserts the OpenAI error shape a client would get.
fn openai_shaped(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!((400..600).contains(&e.status), "status {}", e.status);
    let body: Value = serde_json::from_str(&e.body()).expect("error body is JSON");
    let error = body.get("error").expect("has error");
    for field in ["message", "type", "param", "code"] {
        prop_assert!(error.get(field).is_some(), "error.{field} missing: {body}");
    }
    prop_assert!(!e.message.is_empty());
    Ok(())
}

/// A byte-level mutation of a seed: flip, insert, delete, truncate or duplicate a range.
#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Repeat(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let special = prop::sample::select(b"{}[]\":,\\0-9e.\n\r ".to_vec());
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<prop::sample::Index>(), special).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        (any::<prop::sample::Index>(), 1usize..32).prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for e in edits {
        let at = |i: &prop::sample::Index, len: usize| i.index(len.max(1)).min(len);
        match e {
            Edit::Flip(i, b) if !v.is_empty() => {
                let k = at(i, v.len()).min(v.len() - 1);
                v[k] = *b;
            }
            Edit::Insert(i, bytes) => {
                let k = at(i, v.len());
                v.splice(k..k, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let k = at(i, v.len());
                let end = (k + n).min(v.len());
                v.drain(k..end);
            }
            Edit::Truncate(i) => v.truncate(at(i, v.len())),
            Edit::Repeat(i, n) => {
                let k = at(i, v.len());
                let end = (k + n).min(v.len());
                let piece = v[k..end].to_vec();
                v.splice(k..k, piece);
            }
            Edit::Flip(..) => {}
        }
    }
    v
}

/// Mutations of real examples, plus a share of fresh random bytes.
fn mutated(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (prop::sample::select(seeds), prop::collection::vec(edit(), 0..6))
            .prop_map(|(seed, edits)| apply(seed.as_bytes(), &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

const REQUESTS: &[&str] = &[
    r#"{"model":"qwen3-max","messages":[{"role":"user","content":"Say hello"}]}"#,
    r#"{"model":"qwen3-max","messages":[{"role":"system","content":"terse"},{"role":"user","content":[{"type":"text","text":"안녕하세요"}]}],"stream":true,"stream_options":{"include_usage":false},"max_tokens":18446744073709551615}"#,
    r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"max_completion_tokens":0}"#,
    r#"{"model":"","messages":[]}"#,
    r#"{"model":"text-embedding-v4","input":["Say hello",[1,2,3]],"dimensions":256,"encoding_format":"float"}"#,
    r#"{"model":"qwen3-max","instructions":"terse","input":[{"role":"user","content":[{"type":"input_text","text":"hi"},{"type":"input_image","image_url":"data:image/png;base64,AAAA"}]}],"max_output_tokens":64,"stream":true,"text":{"format":{"type":"text"}}}"#,
    r#"{"model":"qwen-coder-turbo","prompt":["<|fim_prefix|>def f(<|fim_suffix|>return x<|fim_middle|>",[1,2]],"suffix":"s","n":2,"best_of":3,"max_tokens":18446744073709551615,"stream":true}"#,
];

const STREAMS: &[&str] = &[
    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":22,\"completion_tokens\":17}}\n\ndata: [DONE]\n\n",
    "id:1\nevent:error\n:HTTP_STATUS/429\ndata:{\"request_id\":\"r\",\"code\":\"Throttling.AllocationQuota\",\"message\":\"Allocated quota exceeded\"}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}}\n\n",
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"def\",\"index\":0,\"finish_reason\":null}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
    "data: {\"error\":{\"message\":\"Output data may contain inappropriate content.\",\"type\":\"data_inspection_failed\",\"code\":\"data_inspection_failed\"}}\r\n\r\n: keep-alive\r\rdata: x\n",
];

const ANSWERS: &[&str] = &[
    r#"{"error":{"message":"You have exceeded your current request limit.","type":"limit_requests","code":"limit_requests"}}"#,
    r#"{"error":{"code":"insufficient_quota","message":"Free allocated quota exceeded.","param":null,"type":"insufficient_quota"}}"#,
    r#"{"request_id":"r","code":"Arrearage","message":"Access denied."}"#,
    r#"{"error":{"message":"Rate limit reached. Please try again in 644ms.","type":"tokens","code":"rate_limit_exceeded"}}"#,
    r#"[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"retryDelay":"34s"},{"violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel"}]}]}}]"#,
    r#"{"error":{"message":"Incorrect API key provided: sk-abc123.","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    "<html>Bad Gateway</html>",
];

const CONFIGS: &[&str] = &[
    r#"{"upstreams":{"sim":{"base_url":"http://127.0.0.1:9/v1","profile":"dashscope","location_hint":"apac"},"relay":{"base_url":"https://r.example/v1","profile":"openai-compatible","priority":1,"weight":2.0,"slow_start":{"floor":0.2,"growth":1.5}}},"accounts":{"acct-a":{"upstream":"sim","keys":["K1","K2"],"weight":2.0,"limits":{"qwen3-max":{"rpm":600,"rps":10,"tpm":1000000},"qwen-plus":{}}},"relay-1":{"upstream":"relay","keys":["R"],"limits":{"qwen/qwen3-max":{"rpm":300}}}},"models":{"qwen3-max":{"fallback":["qwen3-max",{"model":"qwen-plus","accounts":["acct-a"]},{"model":"qwen/qwen3-max","upstreams":["relay"]}],"max_wait_ms":1500,"deadline_ms":30000}},"prices":{"qwen3-max":{"tiers":[{"up_to":32000,"input":1.2,"output":6.0},{"input":3.0,"output":15.0}]}},"time_scale":20,"window_margin_ms":300,"max_body_bytes":1000,"bucket_timeout_ms":500}"#,
];

#[test]
fn fuzz_every_outside_input() {
    let mut total = 0u64;
    let mut report = Vec::new();
    let mut run = |name: &str, f: &mut dyn FnMut(&mut TestRunner) -> Result<(), String>| {
        let mut runner = TestRunner::new(RunnerConfig {
            cases: CASES,
            failure_persistence: None,
            ..RunnerConfig::default()
        });
        if let Err(e) = f(&mut runner) {
            panic!("{name}: {e}");
        }
        total += u64::from(CASES);
        report.push(format!("{name} {CASES}"));
    };

    run("request", &mut |r| {
        r.run(&mutated(REQUESTS), |bytes| {
            let endpoints = [
                Endpoint::Chat,
                Endpoint::Embeddings,
                Endpoint::Responses,
                Endpoint::Completions,
            ];
            for endpoint in endpoints {
                match ApiRequest::parse(&bytes, endpoint, 8) {
                    Ok(req) => {
                        let (input, total) = tokens::estimate(&req, 256);
                        prop_assert!(total >= input);
                        let sent: Value = serde_json::from_slice(&req.upstream_body("x")).unwrap();
                        prop_assert_eq!(&sent["model"], "x");
                    }
                    Err(e) => {
                        openai_shaped(&e)?;
                        prop_assert_eq!(e.status, 400);
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    });

    run("sse", &mut |r| {
        let input = (
            mutated(STREAMS),
            prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        );
        r.run(&input, |(bytes, cuts)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parser = SseParser::new(256);
            let mut counter = sse::TextCounter::default();
            let mut last = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                let Ok(events) = parser.push(&bytes[last..cut]) else {
                    return Ok(());
                };
                last = cut;
                for event in events {
                    counter.add(&event);
                    if let Frame::Error { status, body } = sse::frame(&event) {
                        let o = classify_stream_error(Profile::Dashscope, status, &body, 0);
                        prop_assert!(o != Outcome::Success);
                    }
                }
            }
            let _ = parser.finish();
            Ok(())
        })
        .map_err(|e| e.to_string())
    });

    run("config", &mut |r| {
        r.run(&mutated(CONFIGS), |bytes| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match Config::from_value(&Value::String(text)) {
                Ok(config) => {
                    for route in config.models.values() {
                        for step in &route.fallback {
                            prop_assert!(config.candidates(step).next().is_some());
                        }
                    }
                    let spec = config.window_spec();
                    prop_assert!(spec.minute_ms >= spec.second_ms);
                }
                Err(message) => prop_assert!(!message.is_empty()),
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    });

    run("classify", &mut |r| {
        let profile = prop::sample::select(vec![
            Profile::Dashscope,
            Profile::Openai,
            Profile::OpenaiCompatible,
        ]);
        let header = prop::sample::select(vec![
            "retry-after",
            "retry-after-ms",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
            "x-ratelimit-remaining-tokens",
        ]);
        let value = prop_oneof![
            "[0-9]{1,25}(\\.[0-9]{0,9})?".boxed(),
            "([0-9]{1,6}(h|m|s|ms|us|ns)){1,4}".boxed(),
            "(Mon|Wed), [0-9]{2} (Jan|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT".boxed(),
            ".{0,20}".boxed(),
        ];
        let headers = prop::collection::vec((header, value), 0..4);
        let input = (profile, 100u16..600, headers, mutated(ANSWERS));
        r.run(&input, |(profile, status, headers, body)| {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect();
            match classify(profile, status, &headers, &body, 1_800_000_000_000) {
                Outcome::Client(e) => {
                    openai_shaped(&e)?;
                    prop_assert!(
                        !e.message.contains("sk-abc123"),
                        "a key leaked: {}",
                        e.message
                    );
                }
                Outcome::Cooldown {
                    cooldown_ms: ms, ..
                }
                | Outcome::Burst { backoff_ms: ms }
                | Outcome::Unavailable { cooldown_ms: ms }
                | Outcome::Retry { after_ms: Some(ms) } => prop_assert!(ms <= MAX_HINT_MS),
                _ => {}
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    });

    run("route", &mut |r| {
        let method = prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]);
        let path = prop_oneof![
            "/(v1|admin|healthz)(/[a-z%0-9A-F._-]{0,12}){0,5}/?".boxed(),
            "/admin/buckets(/[^?#]{0,10}){0,4}".boxed(),
            "/v1/responses(/[^?#]{0,16}){0,3}".boxed(),
            ".{0,30}".boxed(),
        ];
        r.run(&(method, path), |(method, path)| {
            if let Err(e) = routes::route(method, &path) {
                openai_shaped(&e)?;
                prop_assert!(e.status == 404 || e.status == 405);
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    });

    run("affinity", &mut |r| {
        let bytes = || prop::collection::vec(any::<u8>(), 0..100);
        r.run(&(bytes(), ".{0,24}", bytes()), |(head, id, tail)| {
            // An answer holding the id quoted, amid anything.
            let raw = [head, format!("\"{id}\"").into_bytes(), tail].concat();
            if let Some(t) = affinity::untag(&id) {
                prop_assert!(t.upstream_id.len() + t.account_tag.len() < id.len());
                let owner = affinity::Owner {
                    user: id.clone(),
                    secrets: vec![raw.clone()],
                };
                let _ = t.belongs(Some(&owner));
            }
            let _ = affinity::follow_up(Some(&id), None);
            // Ids needing no escape are always found and tagged.
            let plain = !id.is_empty() && id.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
            match affinity::retag(&raw, &id, "acct", None) {
                Some(out) => prop_assert!(out.len() > raw.len()),
                None => prop_assert!(!plain, "{id:?} was not tagged"),
            }
            let _ = affinity::response_id(&raw);
            Ok(())
        })
        .map_err(|e| e.to_string())
    });

    println!(
        "fuzz: {total} generated and mutated inputs ({}), no panic",
        report.join(", ")
    );
    assert!(total >= 100_000);
}
