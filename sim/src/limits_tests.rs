//! Tests of the sliding-window limiter (limits.rs).

use super::*;
use crate::config::{Burst, Surge};

const MS: u64 = 1_000_000;

fn limits() -> Limits {
    Limits {
        rpm: Some(3),
        rps: Some(2),
        tpm: Some(100),
        tps: None,
        burst: None,
        surge: None,
    }
}

#[test]
fn rps_then_rpm_refuse_and_slide() {
    let l = limits();
    let mut w = Window::default();
    w.arrive(&l, 0, 1, 10).unwrap();
    w.arrive(&l, 100 * MS, 1, 10).unwrap();
    let r = w.arrive(&l, 200 * MS, 1, 10).unwrap_err();
    assert_eq!((r.kind, r.limit, r.used), (LimitKind::Rps, 2, 2));
    assert_eq!(r.wait_ns, 800 * MS);
    w.arrive(&l, 1000 * MS, 1, 10).unwrap();
    let r = w.arrive(&l, 2000 * MS, 1, 10).unwrap_err();
    assert_eq!(r.kind, LimitKind::Rpm);
    assert_eq!(r.wait_ns, MINUTE_NS - 2000 * MS);
    w.arrive(&l, MINUTE_NS, 1, 10).unwrap();
    assert_eq!(w.peak.rpm, 5);
    assert_eq!(w.peak.rps, 3);
}

#[test]
fn tokens_refuse_on_prompt_and_wait_for_enough() {
    let l = limits();
    let mut w = Window::default();
    w.arrive(&l, 0, 30, 40).unwrap();
    w.arrive(&l, 1000 * MS, 30, 40).unwrap();
    let r = w.arrive(&l, 2000 * MS, 30, 40).unwrap_err();
    assert_eq!((r.kind, r.used, r.requested), (LimitKind::Tpm, 80, 30));
    assert_eq!(r.wait_ns, MINUTE_NS - 2000 * MS);
    w.arrive(&l, 2500 * MS, 20, 20).unwrap();
    assert_eq!(w.peak.tpm, 100);
    let info = w.token_info(&l, 2500 * MS).unwrap();
    assert_eq!((info.limit, info.remaining), (100, 0));
}

#[test]
fn burst_checked_first() {
    let l = Limits {
        burst: Some(Burst {
            requests: 2,
            window_ms: 100,
        }),
        ..Limits::default()
    };
    let mut w = Window::default();
    w.arrive(&l, 0, 1, 1).unwrap();
    w.arrive(&l, 10 * MS, 1, 1).unwrap();
    let r = w.arrive(&l, 20 * MS, 1, 1).unwrap_err();
    assert_eq!((r.kind, r.wait_ns), (LimitKind::Burst, 80 * MS));
    w.arrive(&l, 100 * MS, 1, 1).unwrap();
}

#[test]
fn surge_refuses_a_jump_and_passes_a_ramp() {
    let l = Limits {
        surge: Some(Surge {
            floor: 3,
            growth: 2.0,
        }),
        ..Limits::default()
    };
    // From quiet, ten evenly spaced in one second: the fourth is refused.
    let mut w = Window::default();
    let refused = (0..10)
        .filter(|i| w.arrive(&l, i * 100 * MS, 1, 1).is_err())
        .count();
    assert_eq!(refused, 7);
    // A smooth ramp from 2/s growing 1.5x a second up to 10/s, then holding: never refused.
    let mut w = Window::default();
    let mut t = 0.0_f64;
    while t < 8.0 {
        let rate = (2.0 * 1.5_f64.powf(t)).min(10.0);
        let at = (t * 1e9) as u64;
        assert!(w.arrive(&l, at, 1, 1).is_ok(), "at {:.3} s", t);
        t += 1.0 / rate;
    }
}

/// Every query the limiter makes, against a pass over a plain log of what it admitted: the
/// windows are found by binary search and summed by running totals, and must answer exactly as
/// counting and summing the log would (random limits and arrivals: bursts, equal times, quiet
/// spells longer than a minute).
#[test]
fn queries_answer_as_a_pass_over_the_log_would() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n.max(1)
    };
    for case in 0..60 {
        let some = |on: bool, v: u64| on.then_some(v);
        let l = Limits {
            rpm: some(next(2) == 0, 20 + next(200)),
            rps: some(next(2) == 0, 2 + next(20)),
            tpm: some(next(2) == 0, 500 + next(5_000)),
            tps: some(next(3) == 0, 100 + next(1_000)),
            burst: some(next(4) == 0, 0).map(|_| Burst {
                requests: 2 + next(10),
                window_ms: 50 + next(500),
            }),
            surge: some(next(4) == 0, 0).map(|_| Surge {
                floor: 1 + next(5),
                growth: 1.0 + next(3) as f64 / 2.0,
            }),
        };
        let mut w = Window::default();
        let (mut admitted, mut arrivals) = (Vec::<(u64, u64)>::new(), Vec::<u64>::new());
        let mut now = 0;
        for i in 0..800 {
            now += match next(10) {
                0 => 0,
                1 => next(70_000) * MS,
                _ => next(400) * MS,
            };
            let prompt = 1 + next(300);
            let total = prompt + next(200);
            arrivals.push(now);
            if w.arrive(&l, now, prompt, total).is_ok() {
                admitted.push((now, total));
            }
            let burst = l.burst.map(|b| b.window_ms * MS);
            // The second before is asked at `now - 1 s` (the surge rule); the rest at `now`.
            let asks = [
                (now, SECOND_NS),
                (now, MINUTE_NS),
                (now.saturating_sub(SECOND_NS), SECOND_NS),
            ];
            for (at, span) in asks.into_iter().chain(burst.map(|b| (now, b))) {
                let within: Vec<(u64, u64)> = (admitted.iter().copied())
                    .filter(|(t, _)| t + span > at && *t <= at)
                    .collect();
                let tokens: u64 = within.iter().map(|(_, k)| k).sum();
                let ctx = format!("case {case}, arrival {i}, at {at}, span {span}");
                assert_eq!(w.requests_in(at, span), within.len() as u64, "{ctx}");
                assert_eq!(w.tokens_in(at, span), tokens, "{ctx}");
                let oldest = within.first().map_or(0, |(t, _)| t + span - at);
                assert_eq!(w.oldest_expiry(at, span), oldest, "{ctx}");
                let limit = 1 + next(within.len() as u64 + 2);
                let must_leave = (within.len() as u64 + 1).saturating_sub(limit) as usize;
                let wait = must_leave.checked_sub(1).map_or(0, |last| {
                    within.get(last).map_or(span, |(t, _)| t + span - at)
                });
                assert_eq!(
                    w.wait_for_requests(at, span, limit),
                    wait,
                    "{ctx}, limit {limit}"
                );
                let (limit, need) = (1 + next(tokens + 50), 1 + next(300));
                let mut left = tokens;
                let wait = match need > limit {
                    true => span,
                    false if tokens + need <= limit => 0,
                    false => (within.iter())
                        .find_map(|(t, k)| {
                            left -= k;
                            (left + need <= limit).then_some(t + span - at)
                        })
                        .unwrap_or(0),
                };
                assert_eq!(
                    w.wait_for_tokens(at, span, limit, need),
                    wait,
                    "{ctx}, {limit}/{need}"
                );
            }
            for span in [SECOND_NS, MINUTE_NS] {
                let want = arrivals.iter().filter(|t| *t + span > now).count() as u64;
                assert_eq!(
                    count_since(&w.arrivals, now, span),
                    want,
                    "case {case}, arrival {i}"
                );
            }
        }
    }
}
