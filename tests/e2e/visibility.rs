//! Visibility scenarios: `/admin/metrics` parsed by the reference Prometheus parser agrees
//! with the admin views and the simulator; every request leaves one JSON log line.

use crate::support::{chat_body, eventually, stat, Ctx, ADMIN_TOKEN};
use crate::Scenario;
use serde_json::Value;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;

pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "after_a_mix_metrics_admin_views_and_the_simulator_agree",
            |c| Box::pin(mix_agrees(c)),
        ),
        (
            "metrics_parse_and_agree_with_the_admin_views_and_the_simulator",
            |c| Box::pin(metrics_agree(c)),
        ),
        ("every_request_leaves_one_json_log_line", |c| {
            Box::pin(request_lines(c))
        }),
        (
            "dashboard_shows_a_parked_bucket_and_clears_it_in_a_real_browser",
            |c| Box::pin(dashboard(c)),
        ),
    ]
}

/// The samples of an exposition as `prometheus_client` reads them: [name, {labels}, value].
fn parse(ctx: &Ctx, text: &str) -> Vec<Value> {
    let mut child = Command::new(ctx.root().join(".venv/bin/python"))
        .arg(ctx.root().join("tests/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the .venv's python (make bootstrap)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser refused /admin/metrics:\n{text}"
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

async fn scrape(ctx: &Ctx) -> Vec<Value> {
    let reply = ctx
        .send(
            ctx.http
                .get(format!("{}/admin/metrics", ctx.url()))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply
        .header("content-type")
        .starts_with("text/plain; version=0.0.4"));
    parse(ctx, &reply.text)
}

async fn metrics_agree(ctx: Arc<Ctx>) {
    let bucket = [("account", "acct-a"), ("model", "qwen3-max")];
    let ok = |s: &[Value]| {
        sample(
            s,
            "gateway_bucket_requests_total",
            &[bucket[0], bucket[1], ("outcome", "ok")],
        )
    };
    let before = scrape(&ctx).await;
    for _ in 0..4 {
        assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    }
    // Settles land off the hot path.
    let settled = eventually(5, || {
        let ctx = ctx.clone();
        let base = ok(&before);
        async move { ok(&scrape(&ctx).await) - base >= 4.0 }
    })
    .await;
    assert!(settled, "the metrics count the four answers");
    let after = scrape(&ctx).await;
    let view = ctx.bucket("acct-a", "qwen3-max").await;
    assert_eq!(
        ok(&after) as u64,
        stat(&view, &["state", "counters", "ok"]),
        "metrics and the admin view agree"
    );
    let sim = stat(&ctx.sim_model("acct-a", "qwen3-max"), &["ok"]);
    assert_eq!(
        (ok(&after) - ok(&before)) as u64,
        sim,
        "and the simulator served as many"
    );
    assert_eq!(
        sample(
            &after,
            "gateway_bucket_limit",
            &[bucket[0], bucket[1], ("window", "rpm")]
        ),
        6.0
    );
    assert_eq!(sample(&after, "gateway_bucket_up", &bucket), 1.0);
    let prompt = sample(
        &after,
        "gateway_bucket_tokens_total",
        &[bucket[0], bucket[1], ("kind", "prompt")],
    );
    assert_eq!(
        prompt as u64,
        stat(&view, &["state", "counters", "prompt_tokens"])
    );
    // Clients with limits are there too.
    sample(
        &after,
        "gateway_client_requests_total",
        &[("client", "app-a"), ("outcome", "admitted")],
    );
    // The report counts what the bucket counted (its state and history started in this run),
    // as JSON and as CSV.
    let url = format!(
        "{}/admin/report?account=acct-a&model=qwen3-max&days=2",
        ctx.url()
    );
    let report = ctx.send(ctx.http.get(&url).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(report.status, 200, "{}", report.text);
    let report = report.json();
    let days = report["days"].as_array().unwrap().clone();
    assert_eq!(days.len(), 2);
    let served: u64 = days.iter().map(|d| stat(d, &["served"])).sum();
    assert_eq!(served, ok(&after) as u64, "{report}");
    assert_eq!(stat(&days[1], &["rpm_limit"]), 6);
    assert!(stat(&days[1], &["peak_rpm"]) >= 1, "{report}");
    let csv = ctx
        .send(
            ctx.http
                .get(&url)
                .bearer_auth(ADMIN_TOKEN)
                .header("accept", "text/csv"),
        )
        .await;
    assert!(csv.header("content-type").starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", csv.text);
    let served_col = lines[0].split(',').position(|c| c == "served").unwrap();
    let csv_served: u64 = lines[1..]
        .iter()
        .map(|l| {
            l.split(',')
                .nth(served_col)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(csv_served, served);
    let bad = format!("{}/admin/report?account=acct-a", ctx.url());
    ctx.send(ctx.http.get(bad).bearer_auth(ADMIN_TOKEN))
        .await
        .assert_error(400);

    // Downgrades: a burst past qwen3-max's capacity; each answer by a lower model is counted
    // on the chain's first bucket (acct-a's), in its report.
    let downgraded_before: u64 = days.iter().map(|d| stat(d, &["downgraded"])).sum();
    let burst: Vec<_> = (0..24)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.chat(&chat_body("qwen3-max", false)).await })
        })
        .collect();
    let mut lower = 0;
    for r in burst {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        if r.header("x-gateway-served-model") != "qwen3-max" {
            lower += 1;
        }
    }
    assert!(lower > 0, "the burst was past capacity");
    let counted = eventually(5, || {
        let ctx = ctx.clone();
        let url = url.clone();
        async move {
            let r = ctx
                .send(ctx.http.get(&url).bearer_auth(ADMIN_TOKEN))
                .await
                .json();
            let days = r["days"].as_array().unwrap().clone();
            let n: u64 = days.iter().map(|d| stat(d, &["downgraded"])).sum();
            n - downgraded_before == lower
        }
    })
    .await;
    assert!(counted, "{lower} downgrades in the report");
    // The burst filled every qwen3-max bucket: let them free up (their windows are widened
    // by the burst's measured lateness, beyond the reset's pause) before the next scenario.
    let free = eventually(15, || {
        let ctx = ctx.clone();
        async move {
            for account in ["acct-a", "acct-b", "acct-c"] {
                let view = ctx.bucket(account, "qwen3-max").await;
                // Taken after the answer: a free bucket's free_at_ms is the gateway's now.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                if view["state"]["free_at_ms"]
                    .as_u64()
                    .is_some_and(|t| t > now)
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(free, "the qwen3-max buckets free up after the burst");
}

async fn request_lines(ctx: Arc<Ctx>) {
    let ok = ctx.chat(&chat_body("rotate-test", false)).await;
    assert_eq!(ok.status, 200);
    let refused = ctx.chat(&chat_body("no-such-model", false)).await;
    assert_eq!(refused.status, 404);
    let id = ok.header("x-request-id").to_string();
    let line = ctx.request_line(&id).await;
    let line = line.unwrap_or_else(|| panic!("a request line for {id}"));
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["client"], "gateway-keys");
    assert_eq!(line["endpoint"], "chat/completions");
    assert_eq!(line["requested_model"], "rotate-test");
    assert_eq!(line["served_model"], "qwen3-max");
    assert!(
        line["completion_tokens"].as_u64().is_some_and(|t| t > 0),
        "{line}"
    );
    assert!(
        line["attempts"]
            .as_array()
            .is_some_and(|a| a.last().is_some_and(|x| x["outcome"] == "ok")),
        "{line}"
    );
    assert!(line["latency_ms"].is_u64() && line["wait_ms"].is_u64());
    let refused_line = (ctx.request_line(refused.header("x-request-id")).await)
        .expect("the refused request's line");
    assert_eq!(refused_line["status"], 404);
}

/// Headless Chromium opens the dashboard, sees a parked bucket with its reason and counts,
/// clicks Clear and sees it available, then sends a test alert from the page
/// (tests/browser/dashboard.mjs).
async fn dashboard(ctx: Arc<Ctx>) {
    ctx.sim
        .update_account(
            "acct-a",
            serde_json::json!({"state": "free_quota_exhausted"}),
        )
        .unwrap();
    for _ in 0..3 {
        assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    }
    let view = ctx.bucket("acct-a", "qwen3-max").await;
    let reason = view["state"]["parked"]
        .as_str()
        .expect("acct-a parked")
        .to_string();
    ctx.sim
        .update_account("acct-a", serde_json::json!({"state": "ok"}))
        .unwrap();
    // A form on another site cannot clear it with the browser's remembered login.
    let clear = format!("{}/admin/buckets/acct-a/qwen3-max/clear", ctx.url());
    let forged = ctx
        .send(
            ctx.http
                .post(&clear)
                .basic_auth("admin", Some(ADMIN_TOKEN))
                .header("origin", "https://evil.example")
                .header("sec-fetch-site", "cross-site"),
        )
        .await;
    assert_eq!(forged.assert_error(403)["code"], "cross_site_admin_write");
    let out_dir = ctx.root().join("target/e2e/browser");
    let output = tokio::process::Command::new("node")
        .arg(ctx.root().join("tests/browser/dashboard.mjs"))
        .args([
            "--gateway",
            &ctx.url(),
            "--token",
            ADMIN_TOKEN,
            "--bucket",
            "acct-a:qwen3-max",
            "--unset",
            "acct-unset:qwen-turbo",
        ])
        .arg("--out")
        .arg(&out_dir)
        .current_dir(ctx.root())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "dashboard run failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let before = seen["before"]["state"].as_str().unwrap();
    assert!(
        before.contains("parked") && before.contains(&reason),
        "{seen}"
    );
    // The row's counts are the bucket's: served, turned away (column 6 and 7).
    let cells = &seen["before"]["cells"];
    assert_eq!(
        cells[6].as_str().unwrap().trim(),
        stat(&view, &["state", "counters", "ok"]).to_string(),
        "{seen}"
    );
    assert_eq!(
        cells[7].as_str().unwrap().trim(),
        stat(&view, &["state", "counters", "denied"]).to_string(),
        "{seen}"
    );
    assert!(
        seen["after"]["state"]
            .as_str()
            .unwrap()
            .contains("available"),
        "{seen}"
    );
    assert!(
        seen["errors"].as_array().is_some_and(Vec::is_empty),
        "page errors: {seen}"
    );
    // Each client with limits has its row: its use against its own limits, and its counts.
    let clients = &seen["after"]["clients"];
    let app_a = &clients["app-a"];
    assert!(
        app_a[1].as_str().unwrap().ends_with("/ 20"),
        "RPM of 20: {seen}"
    );
    assert!(
        app_a[2].as_str().unwrap().ends_with("/ 100000"),
        "TPM: {seen}"
    );
    let meter = ctx
        .send(
            ctx.http
                .get(format!("{}/admin/clients/app-a", ctx.url()))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await
        .json();
    assert_eq!(
        app_a[6].as_str().unwrap(),
        stat(&meter, &["usage", "totals", "admitted"]).to_string(),
        "{seen}"
    );
    let app_b = &clients["app-b"];
    assert!(
        app_b[3].as_str().unwrap().ends_with("/ 600"),
        "daily tokens: {seen}"
    );
    let cleared = ctx.bucket("acct-a", "qwen3-max").await;
    assert!(cleared["state"]["parked"].is_null(), "{cleared}");
    // An account whose key's secret is not set is named so.
    assert_eq!(seen["unset"], "no key: SIM_KEY_UNSET not set", "{seen}");
    // The page's test alert reached the webhook, and the page says so.
    assert_eq!(
        seen["alertTest"], "Delivered: the webhook answered 200.",
        "{seen}"
    );
    assert_eq!(ctx.alerts("test").len(), 1, "{:?}", ctx.sim.hooks());
    assert!(out_dir.join("dashboard-cleared.png").exists());
}

/// Every simulator account's and model's `ok`, summed.
fn sim_ok_total(ctx: &Ctx) -> u64 {
    let stats = ctx.sim.stats();
    let accounts = stats["accounts"].as_object().unwrap();
    accounts
        .values()
        .flat_map(|a| a["models"].as_object().unwrap().values())
        .map(|m| stat(m, &["ok"]))
        .sum()
}

/// A mix of successes, a rotation, a stream and a parked account: afterwards the metrics,
/// every bucket's admin view and the simulator agree.
async fn mix_agrees(ctx: Arc<Ctx>) {
    let served_ok = |s: &[Value]| -> f64 {
        s.iter()
            .filter(|x| x[0] == "gateway_bucket_requests_total" && x[1]["outcome"] == "ok")
            .filter_map(|x| x[2].as_f64())
            .sum()
    };
    let (metrics_before, sim_before) = (scrape(&ctx).await, sim_ok_total(&ctx));
    // acct-a's quota is gone: its first call parks it and the rest rotate to acct-b.
    ctx.sim
        .update_account(
            "acct-a",
            serde_json::json!({"state": "free_quota_exhausted"}),
        )
        .unwrap();
    for _ in 0..3 {
        assert_eq!(ctx.chat(&chat_body("rotate-test", false)).await.status, 200);
    }
    let stream = ctx.chat(&chat_body("stream-test", true)).await;
    assert_eq!(stream.status, 200);
    assert!(stream.text.contains("[DONE]"));
    let settled = eventually(5, || {
        let ctx = ctx.clone();
        let base = served_ok(&metrics_before);
        async move { served_ok(&scrape(&ctx).await) - base >= 4.0 }
    })
    .await;
    assert!(settled, "the metrics count the four answers");
    let after = scrape(&ctx).await;
    let served = (served_ok(&after) - served_ok(&metrics_before)) as u64;
    assert_eq!(
        served,
        sim_ok_total(&ctx) - sim_before,
        "the simulator served as many"
    );
    // Every bucket's metrics are its admin view's.
    for s in after
        .iter()
        .filter(|x| x[0] == "gateway_bucket_requests_total" && x[1]["outcome"] == "ok")
    {
        let (account, model) = (
            s[1]["account"].as_str().unwrap(),
            s[1]["model"].as_str().unwrap(),
        );
        let view = ctx.bucket(account, &model.replace('/', "%2F")).await;
        assert_eq!(
            s[2].as_f64().unwrap() as u64,
            stat(&view, &["state", "counters", "ok"]),
            "{account}/{model}"
        );
    }
    let a = [("account", "acct-a"), ("model", "qwen3-max")];
    assert_eq!(sample(&after, "gateway_bucket_parked", &a), 1.0);
    let parks = sample(
        &after,
        "gateway_bucket_requests_total",
        &[a[0], a[1], ("outcome", "parked")],
    ) - sample(
        &metrics_before,
        "gateway_bucket_requests_total",
        &[a[0], a[1], ("outcome", "parked")],
    );
    assert_eq!(parks, 1.0);
    let view = ctx.bucket("acct-a", "qwen3-max").await;
    assert!(
        view["state"]["parked"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{view}"
    );
}
