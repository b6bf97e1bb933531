//! The exposition parses back with the reference Prometheus text parser (Python's
//! `prometheus_client`, in the project's .venv: `make bootstrap`), with the numbers it was given.

use super::*;
use crate::access::meter::{Meter, MeterLimits};
use crate::bucket::{BucketState, Policy};
use crate::window::WindowSpec;
use serde_json::Value;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The samples as the reference parser reads them: [name, {labels}, value].
fn parse(text: &str) -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new(format!("{root}/.venv/bin/python"))
        .arg(format!("{root}/tests/parse_metrics.py"))
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
        "the parser refused the exposition:\n{text}"
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][k] == *v))
        .and_then(|s| s[2].as_f64())
}

#[test]
fn buckets_and_clients_parse_back_with_their_numbers() {
    let limits = Limits {
        rpm: Some(600),
        rps: Some(10),
        ..Limits::default()
    };
    let policy = Policy {
        limits: &limits,
        spec: WindowSpec::default(),
        slow_start: None,
        credit_max: 0,
    };
    let mut snap = BucketState::default().snapshot(1_000, &policy);
    snap.counters.ok = 41;
    snap.counters.rate_limited = 3;
    snap.counters.cost_micro_usd = 1_250_000;
    snap.counters.cached_tokens = 2_048;
    snap.parked = Some("free quota exhausted".into());
    let odd = Limits::default();
    let buckets = [
        BucketRow {
            account: "acct-a",
            model: "qwen3-max",
            limits: &limits,
            snapshot: Some(&snap),
        },
        // A model name with a quote and a backslash, and a bucket that did not answer.
        BucketRow {
            account: "relay-1",
            model: "qwen/\"x\"\\y",
            limits: &odd,
            snapshot: None,
        },
    ];
    let mut meter = Meter::default();
    let mut view = meter.view(1_000, MeterLimits::default(), WindowSpec::default());
    view.totals.scheduled = 7;
    let clients = [ClientRow {
        client: "web",
        view: Some(&view),
    }];
    let text = render(&buckets, &clients);
    let scrape = parse(&text);
    let a = [("account", "acct-a"), ("model", "qwen3-max")];
    let with = |extra: (&'static str, &'static str)| [a[0], a[1], extra];
    assert_eq!(
        value(
            &scrape,
            "gateway_bucket_requests_total",
            &with(("outcome", "ok"))
        ),
        Some(41.0)
    );
    assert_eq!(
        value(
            &scrape,
            "gateway_bucket_requests_total",
            &with(("outcome", "rate_limited"))
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&scrape, "gateway_bucket_cost_usd_total", &a),
        Some(1.25)
    );
    assert_eq!(
        value(&scrape, "gateway_bucket_cached_tokens_total", &a),
        Some(2_048.0)
    );
    assert_eq!(value(&scrape, "gateway_bucket_parked", &a), Some(1.0));
    assert_eq!(
        value(&scrape, "gateway_bucket_limit", &with(("window", "rps"))),
        Some(10.0)
    );
    assert_eq!(value(&scrape, "gateway_bucket_up", &a), Some(1.0));
    let odd_labels = [("account", "relay-1"), ("model", "qwen/\"x\"\\y")];
    assert_eq!(value(&scrape, "gateway_bucket_up", &odd_labels), Some(0.0));
    assert_eq!(
        value(
            &scrape,
            "gateway_client_requests_total",
            &[("client", "web"), ("outcome", "admitted")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scrape,
            "gateway_client_scheduled_total",
            &[("client", "web")]
        ),
        Some(7.0)
    );
    // Every family is declared once, with its type.
    for name in ["gateway_bucket_requests_total", "gateway_client_used"] {
        assert_eq!(
            text.matches(&format!("# TYPE {name} ")).count(),
            1,
            "{name}"
        );
    }
}
