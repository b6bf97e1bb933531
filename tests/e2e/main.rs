//! End-to-end suite: the built Worker in workerd (wrangler dev) against the upstream simulator on loopback.
//!
//! A custom harness (not libtest) so setup and teardown happen once, always, even when a
//! scenario panics: simulator and gateway are started on ephemeral ports with a fresh
//! Durable Object state directory, every scenario runs, then everything started is stopped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod basic;
mod caching;
mod clients;
mod completions;
mod gateway;
mod hardening;
mod misconfig;
mod pacing;
mod quota;
mod recorder;
mod responses;
mod streams;
mod support;
mod visibility;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Ctx, Setup};

/// A scenario: panics (assert!) mean failure.
type Scenario = fn(Arc<Ctx>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Suites: a setup (simulator and gateway config) and the scenarios run against it.
fn suites() -> Vec<(&'static Setup, Vec<(&'static str, Scenario)>)> {
    let mut compressed = Vec::new();
    compressed.extend(basic::scenarios());
    compressed.extend(quota::scenarios());
    compressed.extend(streams::scenarios());
    compressed.extend(responses::scenarios());
    compressed.extend(completions::scenarios());
    compressed.extend(caching::scenarios());
    compressed.extend(hardening::scenarios());
    compressed.extend(visibility::scenarios());
    compressed.extend(clients::scenarios());
    vec![
        (&support::COMPRESSED, compressed),
        (&pacing::REAL_TIME, pacing::scenarios()),
        (&misconfig::MISCONFIGURED, misconfig::scenarios()),
    ]
}

fn main() {
    // Scenario panics are reported by the runner, once, without a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (passed, failed) = runtime.block_on(run(&filter));
    println!("\ne2e: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

async fn run(filter: &[String]) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for (setup, scenarios) in suites() {
        let selected: Vec<_> = scenarios
            .into_iter()
            .filter(|(name, _)| {
                filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()))
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let (p, f) = run_suite(setup, selected).await;
        passed += p;
        failed += f;
    }
    (passed, failed)
}

async fn run_suite(
    setup: &'static Setup,
    selected: Vec<(&'static str, Scenario)>,
) -> (usize, usize) {
    println!(
        "running {} end-to-end scenarios (workerd via wrangler dev + upstream simulator)",
        selected.len()
    );
    let ctx = match Ctx::start(setup).await {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("e2e setup failed: {e}");
            return (0, selected.len().max(1));
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for (i, (name, scenario)) in selected.into_iter().enumerate() {
        let resetting = ctx.clone();
        if let Err(panic) = tokio::spawn(async move { resetting.reset(i == 0).await }).await {
            failed += 1;
            println!(
                "test {name} ... FAILED: the reset before it failed: {}",
                support::panic_message(panic)
            );
            continue;
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::spawn(scenario(ctx.clone())),
        )
        .await;
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(())) => {
                passed += 1;
                println!("test {name} ... ok ({took:.1}s)");
            }
            Ok(Err(panic)) => {
                failed += 1;
                println!(
                    "test {name} ... FAILED ({took:.1}s): {}",
                    support::panic_message(panic)
                );
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED: timed out after 120 s");
            }
        }
    }
    match Arc::try_unwrap(ctx) {
        Ok(ctx) => ctx.stop(failed == 0).await,
        Err(_) => {
            eprintln!("e2e: a scenario still holds the context; processes are stopped on exit")
        }
    }
    (passed, failed)
}
