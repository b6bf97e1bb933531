//! The /_sim/ control endpoint, the models endpoint, the library handle and the binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use upstream_sim::{Limits, SimConfig, Simulator};

use crate::common::*;

async fn control(sim: &Simulator, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}/_sim/{path}", sim.url());
    let req = match method {
        "GET" => client().get(url),
        "DELETE" => client().delete(url),
        _ => client().post(url),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn health_stats_reset_and_account_changes() {
    let sim = start(config(
        Limits {
            rpm: Some(1),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    assert_eq!(
        control(&sim, "GET", "health", None).await,
        (200, json!({"ok": true}))
    );

    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 429);
    let (status, stats) = control(&sim, "GET", "stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats, sim.stats());
    let a = &stats["accounts"]["acct-a"];
    assert_eq!(a["state"], "ok");
    let q = &a["models"]["qwen3-max"];
    for field in [
        "calls",
        "ok",
        "prompt_tokens",
        "completion_tokens",
        "over_limit",
    ] {
        assert!(q[field].is_u64(), "{field}");
    }
    for field in ["rps", "rpm", "tps", "tpm"] {
        assert!(q["peak"][field].is_u64(), "{field}");
    }
    assert_eq!(
        q["limits"],
        json!({"rpm": 1, "rps": null, "tpm": null, "tps": null, "burst": null, "surge": null})
    );
    assert_eq!(q["errors"]["limit_requests"], 1);
    assert_eq!(
        stats["accounts"]["acct-b"]["models"]["qwen-plus"]["calls"],
        0
    );

    // State change, then reset restores it and frees the window.
    let (status, _) = control(
        &sim,
        "POST",
        "accounts/acct-a",
        Some(json!({"state": "arrears"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(&sim, DS, "sk-a2", &m).await;
    assert_eq!(status, 400);
    assert!(body.contains("Arrearage"));
    assert_eq!(sim.stats()["accounts"]["acct-a"]["state"], "arrears");
    assert_eq!(control(&sim, "POST", "reset", None).await.0, 200);
    let stats = sim.stats();
    assert_eq!(stats["total_calls"], 0);
    assert_eq!(stats["accounts"]["acct-a"]["state"], "ok");
    assert_eq!(
        stats["accounts"]["acct-a"]["models"]["qwen3-max"]["peak"]["rpm"],
        0
    );
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);

    // Limits change per model; null makes it unlimited.
    let change = json!({"limits": {"qwen3-max": null}});
    assert_eq!(
        control(&sim, "POST", "accounts/acct-a", Some(change))
            .await
            .0,
        200
    );
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    let change = json!({"limits": {"qwen-plus": {"rpm": 0}}});
    assert_eq!(
        control(&sim, "POST", "accounts/acct-a", Some(change))
            .await
            .0,
        200
    );
    assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen-plus")).await.0, 429);

    let bad = json!({"state": "broke"});
    assert_eq!(
        control(&sim, "POST", "accounts/acct-a", Some(bad)).await.0,
        400
    );
    let who = json!({"state": "ok"});
    assert_eq!(
        control(&sim, "POST", "accounts/acct-z", Some(who)).await.0,
        404
    );
    assert_eq!(control(&sim, "GET", "nothing", None).await.0, 404);
}

#[tokio::test]
async fn hooks_keep_what_they_receive_and_answer_as_told() {
    let sim = start(config(Limits::default(), 1.0)).await;
    let alert = json!({"text": "parked", "event": "bucket_parked"});
    let post = |body: Value| control(&sim, "POST", "hooks/ops", Some(body));
    assert_eq!(post(alert.clone()).await, (200, json!({"ok": true})));
    assert_eq!(
        control(&sim, "POST", "hook_status", Some(json!({"status": 503})))
            .await
            .0,
        200
    );
    assert_eq!(post(json!({"text": "again"})).await.0, 503);
    let kept = json!([{"name": "ops", "body": alert}, {"name": "ops", "body": {"text": "again"}}]);
    assert_eq!(
        control(&sim, "GET", "hooks", None).await,
        (200, kept.clone())
    );
    assert_eq!(Value::Array(sim.hooks()), kept);
    let bad = json!({"status": "x"});
    assert_eq!(control(&sim, "POST", "hook_status", Some(bad)).await.0, 400);
    // A reset forgets them and answers 200 again.
    assert_eq!(control(&sim, "POST", "reset", None).await.0, 200);
    assert_eq!(control(&sim, "GET", "hooks", None).await, (200, json!([])));
    assert_eq!(post(json!({})).await.0, 200);
}

#[tokio::test]
async fn faults_and_time_scale_over_http() {
    let sim = start(config(
        Limits {
            rpm: Some(1),
            ..Limits::default()
        },
        1.0,
    ))
    .await;
    let m = hello("qwen3-max");
    let (status, body) = control(
        &sim,
        "POST",
        "faults",
        Some(json!([{"kind": "status", "status": 503}, {"kind": "reset", "times": 0}])),
    )
    .await;
    assert_eq!((status, &body["queued"]), (200, &json!(2)));
    let (_, list) = control(&sim, "GET", "faults", None).await;
    assert_eq!(list[1]["kind"], "reset");
    assert_eq!(list[1]["times"], 0);
    assert_eq!(control(&sim, "DELETE", "faults", None).await.0, 200);
    assert_eq!(
        control(&sim, "POST", "faults", Some(json!({"kind": "x"})))
            .await
            .0,
        400
    );

    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 429);
    let scale = json!({"time_scale": 600});
    assert_eq!(
        control(&sim, "POST", "time_scale", Some(scale)).await.0,
        200
    );
    assert_eq!(sim.stats()["time_scale"], 600.0);
    // At 600x the rest of the minute passes in at most 100 ms.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(call(&sim, DS, "sk-a1", &m).await.0, 200);
    let zero = json!({"time_scale": 0});
    assert_eq!(control(&sim, "POST", "time_scale", Some(zero)).await.0, 400);
}

#[tokio::test]
async fn models_endpoint_in_both_dialects() {
    let sim = start(SimConfig::demo()).await;
    for prefix in [DS, OA] {
        let resp = client()
            .get(format!("{}{prefix}/models", sim.url()))
            .bearer_auth("sk-c1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "list");
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "qwen3-max",
                "qwen-plus",
                "qwen-turbo",
                "text-embedding-v4",
                "qwen-coder-turbo"
            ]
        );
        assert_eq!(v["data"][0]["owned_by"], "system");
        let resp = client()
            .get(format!("{}{prefix}/models", sim.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
}

#[tokio::test]
async fn embeddings_in_both_dialects_count_their_input() {
    let sim = start(SimConfig::demo()).await;
    for prefix in [DS, OA] {
        let body = json!({"model": "text-embedding-v4", "input": ["abcd", "efgh"]});
        let resp = post_to(&sim, prefix, "embeddings", "sk-c1", &body).await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(
            v["usage"],
            serde_json::json!({"prompt_tokens": 2, "total_tokens": 2})
        );
    }
    let counted = &sim.stats()["accounts"]["acct-c"]["models"]["text-embedding-v4"];
    assert_eq!(
        (counted["ok"].as_u64(), counted["prompt_tokens"].as_u64()),
        (Some(2), Some(4))
    );
}

#[tokio::test]
async fn text_completions_in_both_dialects_whole_and_streamed() {
    // As on DashScope, only the Qwen Coder model serves them.
    let sim = start(SimConfig::demo()).await;
    for prefix in [DS, OA] {
        for stream in [false, true] {
            let body = json!({"model": "qwen-coder-turbo", "prompt": "abcd", "max_tokens": 3,
                "stream": stream, "stream_options": {"include_usage": true}});
            let resp = post_to(&sim, prefix, "completions", "sk-c1", &body).await;
            assert_eq!(resp.status(), 200);
            let text = resp.text().await.unwrap();
            let datas: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            let v: Value = match datas.as_slice() {
                [.., usage, "[DONE]"] if stream => serde_json::from_str(usage).unwrap(),
                _ => serde_json::from_str(&text).unwrap(),
            };
            assert_eq!(v["usage"]["prompt_tokens"], 1, "{text}");
            assert_eq!(v["usage"]["completion_tokens"], 3, "{text}");
        }
    }
    let chat_only = json!({"model": "qwen3-max", "prompt": "abcd"});
    let resp = post_to(&sim, DS, "completions", "sk-c1", &chat_only).await;
    assert_eq!(resp.status(), 404);
    let chat =
        json!({"model": "qwen-coder-turbo", "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_to(&sim, DS, "chat/completions", "sk-c1", &chat).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn responses_in_both_dialects_whole_and_streamed() {
    let mut config = SimConfig::demo();
    config.chat_only = vec!["qwen-plus".into()];
    for account in config.accounts.values_mut() {
        account.limits.remove("qwen-turbo");
    }
    let sim = start(config).await;
    for prefix in [DS, OA] {
        for stream in [false, true] {
            let body = serde_json::json!({"model": "qwen-turbo", "input": "abcd",
                "max_output_tokens": 3, "stream": stream});
            let resp = post_to(&sim, prefix, "responses", "sk-c1", &body).await;
            assert_eq!(resp.status(), 200);
            let text = resp.text().await.unwrap();
            let last = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .next_back()
                .unwrap_or(&text);
            let v: Value = serde_json::from_str(last).unwrap();
            let response = if stream { &v["response"] } else { &v };
            assert_eq!(response["status"], "completed", "{text}");
            // (4 + 1) + 3 in, 3 out.
            assert_eq!(response["usage"]["input_tokens"], 8, "{text}");
            assert_eq!(response["usage"]["output_tokens"], 3, "{text}");
        }
    }
    // A stored response is held by the account that made it.
    let first = json!({"model": "qwen-turbo", "input": "abcd"});
    let first: Value = post_to(&sim, DS, "responses", "sk-c1", &first)
        .await
        .json()
        .await
        .unwrap();
    let follow_up =
        json!({"model": "qwen-turbo", "input": "more", "previous_response_id": first["id"]});
    for (key, want) in [("sk-c1", 200), ("sk-a1", 400)] {
        let resp = post_to(&sim, DS, "responses", key, &follow_up).await;
        assert_eq!(resp.status(), want, "{key}");
        if want == 400 {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], "previous_response_not_found", "{v}");
        }
    }
    // Kept for its account only: retrieved, its input listed, deleted.
    let id = first["id"].as_str().unwrap();
    let url = |tail: &str| format!("{}{DS}/responses/{id}{tail}", sim.url());
    let get = |tail: &str, key: &'static str| client().get(url(tail)).bearer_auth(key).send();
    let answer: Value = get("", "sk-c1").await.unwrap().json().await.unwrap();
    assert_eq!(answer, first);
    let items: Value = get("/input_items", "sk-c1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items["data"][0]["content"], "abcd", "{items}");
    assert_eq!(get("", "sk-a1").await.unwrap().status(), 404);
    let deleted: Value = client()
        .delete(url(""))
        .bearer_auth("sk-c1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(get("", "sk-c1").await.unwrap().status(), 404);
    // A chat-only model: not on the Responses API, served on chat.
    for (path, body) in [
        ("responses", json!({"model": "qwen-plus", "input": "abcd"})),
        ("chat/completions", hello("qwen-plus")),
    ] {
        let resp = post_to(&sim, DS, path, "sk-c1", &body).await;
        let want = if path == "responses" { 404 } else { 200 };
        assert_eq!(resp.status(), want, "{path}");
    }
    let counted = &sim.stats()["accounts"]["acct-c"]["models"]["qwen-turbo"];
    assert_eq!(
        (
            counted["ok"].as_u64(),
            counted["completion_tokens"].as_u64()
        ),
        (Some(6), Some(36))
    );
}

#[tokio::test]
async fn demo_config_and_shutdown() {
    let sim = start(SimConfig::demo()).await;
    assert!(sim.url().starts_with("http://127.0.0.1:"));
    let stats = sim.stats();
    assert_eq!(stats["keys"].as_object().unwrap().len(), 4);
    assert_eq!(
        stats["accounts"]["acct-a"]["models"]["qwen3-max"]["limits"]["rpm"],
        6
    );
    for _ in 0..2 {
        assert_eq!(call(&sim, DS, "sk-a1", &hello("qwen3-max")).await.0, 200);
    }
    // Demo RPS of qwen3-max is 2.
    assert_eq!(call(&sim, DS, "sk-a2", &hello("qwen3-max")).await.0, 429);
    sim.update_account("acct-c", json!({"state": "free_tier_only"}))
        .unwrap();
    assert_eq!(call(&sim, DS, "sk-c1", &hello("qwen3-max")).await.0, 403);
    // An idle connection open at shutdown is closed by it. (Probing the port afterwards
    // would race with other tests binding ephemeral ports.)
    let mut idle = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sim.shutdown().await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("shutdown must close open connections");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let outside = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    assert!(Simulator::start_on(SimConfig::demo(), outside)
        .await
        .is_err());
}

#[tokio::test]
async fn binary_prints_its_url_and_stops_on_sigterm() {
    let exe = env!("CARGO_BIN_EXE_upstream-sim");
    let mut child = Command::new(exe)
        .args(["--port", "0", "--time-scale", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("upstream-sim listening on ")
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let stats: Value = client()
        .get(format!("{url}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["time_scale"], 60.0);
    let killed = Command::new("sh")
        // The shell's own `kill`, so no procps is needed.
        .args(["-c", "kill -TERM \"$0\"", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    let refused = Command::new(exe)
        .args(["--host", "0.0.0.0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));
}
