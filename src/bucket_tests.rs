//! Bucket state machine, scenario by scenario: schedule, deny, cool, ramp, park, probe, expire, persist (compiled only under #[cfg(test)]).

use super::*;
use crate::classify::{Outcome, ParkScope};

const SPEC: WindowSpec = WindowSpec {
    second_ms: 1_000,
    minute_ms: 60_000,
};
const FAST: WindowSpec = WindowSpec {
    second_ms: 10,
    minute_ms: 600,
};
const HOUR: u64 = 3_600_000;

fn lim(rpm: Option<u64>, rps: Option<u64>, tpm: Option<u64>, tps: Option<u64>) -> Limits {
    Limits { rpm, rps, tpm, tps }
}

fn pol(limits: &Limits, spec: WindowSpec) -> Policy<'_> {
    Policy {
        limits,
        spec,
        slow_start: None,
        credit_max: 0,
    }
}

fn usage(requests: u64, tokens: u64) -> Used {
    Used { requests, tokens }
}

fn req(est_tokens: u64, max_wait_ms: u64) -> AcquireRequest {
    ask(est_tokens, max_wait_ms, HOUR)
}

fn ask(est_tokens: u64, max_wait_ms: u64, lease_ttl_ms: u64) -> AcquireRequest {
    AcquireRequest {
        est_tokens,
        max_wait_ms,
        lease_ttl_ms,
        credit: false,
        missed_lag_ms: None,
    }
}

/// A cooldown the upstream asked for (`hinted`: kept as is).
fn cooldown(ms: u64, kind: &str) -> SettleOutcome {
    SettleOutcome::Cooldown {
        ms,
        kind: kind.into(),
        hinted: true,
    }
}

/// The lease of a probe admission, None for anything else.
fn probe_lease(a: &Admission) -> Option<u64> {
    match a {
        Admission::Go {
            lease, probe: true, ..
        } => Some(*lease),
        _ => None,
    }
}

fn go(lease: u64, at_ms: u64) -> Admission {
    Admission::Go {
        lease,
        at_ms,
        probe: false,
        late_ms: 0,
        credit: None,
    }
}

fn denied(until_ms: Option<u64>, reason: DenyReason) -> Admission {
    Admission::Denied { until_ms, reason }
}

fn lease_of(a: &Admission) -> u64 {
    match a {
        Admission::Go { lease, .. } => *lease,
        other => panic!("expected Go, got {other:?}"),
    }
}

fn at_of(a: &Admission) -> u64 {
    match a {
        Admission::Go { at_ms, .. } => *at_ms,
        other => panic!("expected Go, got {other:?}"),
    }
}

/// A bucket whose sends were measured to land on time (no lateness spread), so the window
/// math is exact; a new bucket assumes a 100 ms spread until 8 sends are measured.
fn measured() -> BucketState {
    let mut b = BucketState::default();
    for _ in 0..8 {
        b.record_lag(0);
    }
    b
}

fn ok(prompt: Option<u64>, completion: Option<u64>) -> SettleOutcome {
    SettleOutcome::Ok {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: 0,
        cost_micro_usd: 0,
    }
}

#[test]
fn rpm6_schedules_the_seventh_at_the_window_end_in_any_time_scale() {
    let l = lim(Some(6), None, None, None);
    for (spec, scale) in [(SPEC, 1), (FAST, 100)] {
        let p = pol(&l, spec);
        let mut b = measured();
        for i in 0..6 {
            assert_eq!(b.acquire(0, &p, &req(1, 0)), go(i, 0));
        }
        let mut wait_long = b.clone();
        assert_eq!(
            wait_long.acquire(0, &p, &req(1, 60_000 / scale)),
            go(6, 60_000 / scale)
        );
        assert_eq!(
            (wait_long.counters.admitted, wait_long.counters.scheduled),
            (7, 1)
        );
        let mut wait_short = b.clone();
        let want = denied(Some(60_000 / scale), DenyReason::Full);
        assert_eq!(wait_short.acquire(0, &p, &req(1, 1_000 / scale)), want);
        assert_eq!(wait_short.counters.denied, 1);
        assert_eq!(wait_short.snapshot(0, &p).free_at_ms, Some(60_000 / scale));
        assert_eq!(wait_short.snapshot(0, &p).used_minute, usage(6, 6));
    }
}

#[test]
fn twenty_scheduled_requests_never_overfill_any_window() {
    let l = lim(Some(6), Some(2), None, None);
    let p = pol(&l, FAST);
    let mut b = measured();
    let starts: Vec<u64> = (0..20)
        .map(|i| at_of(&b.acquire(i * 10, &p, &req(1, 10_000))))
        .collect();
    assert!(
        starts.iter().any(|&t| t > 1_200),
        "slots were scheduled minutes ahead: {starts:?}"
    );
    let last = starts.iter().max().copied().unwrap_or(0);
    for (window, cap) in [(FAST.second_ms, 2), (FAST.minute_ms, 6)] {
        for s in 0..=last + window {
            let n = starts.iter().filter(|&&t| t <= s && t + window > s).count();
            assert!(
                n <= cap,
                "{n} requests in the {window} ms window ending {s}"
            );
        }
    }
}

#[test]
fn too_large_requests_never_fit() {
    for l in [
        lim(None, None, None, Some(100)),
        lim(None, None, Some(100), None),
    ] {
        let p = pol(&l, SPEC);
        let mut b = measured();
        assert_eq!(
            b.acquire(0, &p, &req(101, HOUR)),
            denied(None, DenyReason::TooLarge)
        );
        assert_eq!(b.acquire(0, &p, &req(100, 0)), go(0, 0));
    }
}

#[test]
fn cooldown_releases_the_slot_and_delays_everything() {
    let l = lim(Some(1), None, None, None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let a = lease_of(&b.acquire(0, &p, &req(1, 0)));
    b.settle(100, &p, a, &cooldown(5_000, "rpm"));
    let snap = b.snapshot(100, &p);
    assert_eq!(
        (snap.cooling_until_ms, snap.free_at_ms),
        (Some(5_100), Some(5_100))
    );
    assert_eq!(b.counters.rate_limited, 1);
    assert_eq!(
        b.acquire(200, &p, &req(1, 0)),
        denied(Some(5_100), DenyReason::Cooling)
    );
    assert_eq!(b.acquire(200, &p, &req(1, 10_000)), go(1, 5_100));
    assert_eq!(
        b.acquire(200, &p, &req(1, 4_000)),
        denied(Some(65_100), DenyReason::Cooling)
    );
    assert_eq!(
        b.acquire(200, &p, &req(1, 6_000)),
        denied(Some(65_100), DenyReason::Full)
    );
    assert_eq!(b.snapshot(5_100, &p).cooling_until_ms, None);
}

#[test]
fn a_surge_429_holds_the_working_rate_then_ramps_back_in_seconds() {
    // 10 rps, no slow start: full rate at once; a surge 429 at 3 s.
    let l = lim(None, Some(10), None, None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let mut now = 0;
    let mut sends = Vec::new();
    while now < 3_000 {
        let a = b.acquire(now, &p, &req(1, HOUR));
        sends.push(at_of(&a));
        now = at_of(&a);
    }
    let count = |sends: &[u64], from: u64| {
        sends
            .iter()
            .filter(|&&t| t >= from && t < from + 1_000)
            .count()
    };
    assert_eq!(count(&sends, 1_000), 10, "evenly spaced at the full rate");
    let last = lease_of(&b.acquire(now, &p, &req(1, HOUR)));
    b.settle(now, &p, last, &SettleOutcome::Burst);
    assert_eq!(b.counters.burst, 1);
    let snap = b.snapshot(now, &p);
    assert!(
        snap.growth.is_some(),
        "a gentler growth is learned: {snap:?}"
    );
    // The next seconds: held at the working rate, then back to full in seconds.
    let surge = now;
    let mut sends = Vec::new();
    while now < surge + 8_000 {
        let a = b.acquire(now, &p, &req(1, HOUR));
        sends.push(at_of(&a));
        now = at_of(&a) + 1;
    }
    assert!(
        count(&sends, surge) <= 10,
        "never more than what was working"
    );
    assert!(
        count(&sends, surge) >= 8,
        "not idled: {}",
        count(&sends, surge)
    );
    assert_eq!(
        count(&sends, surge + 6_000),
        10,
        "full rate again within seconds"
    );
}

#[test]
fn manual_park_holds_until_cleared() {
    let l = Limits::default();
    let p = pol(&l, SPEC);
    let mut b = measured();
    b.park(0, "arrears", None, ParkOf::Bucket);
    b.park(5, "timed", Some(10), ParkOf::Bucket);
    let parked = denied(None, DenyReason::Parked("arrears".into()));
    assert_eq!(b.acquire(HOUR, &p, &req(1, HOUR)), parked);
    let snap = b.snapshot(HOUR, &p);
    assert_eq!(
        (snap.free_at_ms, snap.parked, snap.parked_until_ms),
        (None, Some("arrears".into()), None)
    );
    b.clear(2 * HOUR);
    assert_eq!(b.acquire(2 * HOUR, &p, &req(1, 0)), go(0, 2 * HOUR));
    assert_eq!((b.counters.parked, b.counters.denied), (2, 1));
}

#[test]
fn timed_park_lets_one_probe_through() {
    let l = Limits::default();
    let p = pol(&l, SPEC);
    let mut b = measured();
    let other = lease_of(&b.acquire(0, &p, &req(1, 0)));
    b.settle(
        0,
        &p,
        other,
        &SettleOutcome::Park {
            reason: "free quota".into(),
            for_ms: Some(10_000),
            account: false,
        },
    );
    let parked = |until| denied(Some(until), DenyReason::Parked("free quota".into()));
    assert_eq!(b.acquire(5_000, &p, &req(1, 0)), parked(10_000));
    assert_eq!(b.snapshot(5_000, &p).free_at_ms, Some(10_000));
    let probe = b.acquire(10_000, &p, &req(1, 0));
    assert_eq!((probe_lease(&probe), at_of(&probe)), (Some(1), 10_000));
    let ttl_end = 10_000 + HOUR;
    assert_eq!(
        b.acquire(10_000, &p, &req(1, 0)),
        denied(Some(ttl_end), DenyReason::ProbeInFlight)
    );
    b.settle(11_000, &p, 1, &SettleOutcome::Failed);
    assert_eq!(
        b.acquire(20_999, &p, &req(1, 0)),
        parked(21_000),
        "parked again for 10 s"
    );
    // A released probe never reached the upstream: the next request probes instead.
    assert_eq!(probe_lease(&b.acquire(21_000, &p, &req(1, 0))), Some(2));
    b.settle(21_000, &p, 2, &SettleOutcome::Released);
    assert_eq!(probe_lease(&b.acquire(21_000, &p, &req(1, 0))), Some(3));
    b.settle(21_500, &p, 3, &ok(Some(1), Some(1)));
    assert_eq!(b.snapshot(21_500, &p).parked, None);
    assert_eq!(b.acquire(21_500, &p, &req(1, 0)), go(4, 21_500));
}

#[test]
fn an_expired_probe_frees_the_probe_slot() {
    let l = Limits::default();
    let p = pol(&l, SPEC);
    let mut b = measured();
    b.park(0, "free quota", Some(1_000), ParkOf::Bucket);
    let short = ask(1, 0, 500);
    assert_eq!(probe_lease(&b.acquire(1_000, &p, &short)), Some(0));
    let busy = denied(Some(1_500), DenyReason::ProbeInFlight);
    assert_eq!(b.acquire(1_500, &p, &short), busy);
    assert_eq!(probe_lease(&b.acquire(1_501, &p, &short)), Some(1));
}

#[test]
fn expired_leases_leave_in_flight_but_stay_counted() {
    let l = lim(Some(1), None, None, None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let ask = ask(1, 0, 1_000);
    let a = lease_of(&b.acquire(0, &p, &ask));
    assert_eq!(b.snapshot(1_000, &p).in_flight, 1);
    assert_eq!(b.snapshot(1_001, &p).in_flight, 0);
    assert_eq!(
        b.acquire(1_001, &p, &ask),
        denied(Some(60_000), DenyReason::Full)
    );
    b.settle(1_002, &p, a, &SettleOutcome::Released);
    assert_eq!(
        b.acquire(1_003, &p, &ask),
        denied(Some(60_000), DenyReason::Full),
        "late release ignored"
    );
    assert_eq!(b.counters.ok, 0);
}

#[test]
fn release_frees_the_slot_and_failed_keeps_it() {
    let l = lim(Some(2), None, Some(100), None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let a = lease_of(&b.acquire(0, &p, &req(90, 0)));
    b.settle(0, &p, a, &SettleOutcome::Released);
    let a = lease_of(&b.acquire(0, &p, &req(90, 0)));
    b.settle(0, &p, a, &SettleOutcome::Failed);
    assert_eq!(
        b.acquire(0, &p, &req(90, 0)),
        go(2, 0),
        "a failed request's tokens are freed"
    );
    assert_eq!(
        b.acquire(0, &p, &req(1, 0)),
        denied(Some(60_000), DenyReason::Full),
        "its slot is not"
    );
    assert_eq!(b.counters.failed, 1);
}

#[test]
fn settle_reconciles_tokens_and_is_idempotent() {
    let l = lim(None, None, Some(100), None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let a = lease_of(&b.acquire(0, &p, &req(80, 0)));
    b.settle(1, &p, a, &ok(Some(10), Some(10)));
    b.settle(1, &p, a, &ok(Some(10), Some(10)));
    assert_eq!(
        (
            b.counters.ok,
            b.counters.prompt_tokens,
            b.counters.completion_tokens
        ),
        (1, 10, 10)
    );
    let c = lease_of(&b.acquire(1, &p, &req(10, 0)));
    b.settle(2, &p, c, &ok(Some(50), Some(20)));
    assert_eq!(
        b.snapshot(2, &p).used_minute,
        usage(2, 90),
        "reconciled down and up"
    );
    assert_eq!(
        b.acquire(2, &p, &req(11, 0)),
        denied(Some(60_000), DenyReason::Full)
    );
    let d = lease_of(&b.acquire(2, &p, &req(10, 0)));
    b.settle(3, &p, d, &ok(Some(4), None));
    assert_eq!(
        b.snapshot(3, &p).used_minute.tokens,
        100,
        "partial usage keeps the larger estimate"
    );
    let e = lease_of(&b.acquire(60_000, &p, &req(20, 0)));
    b.settle(60_000, &p, e, &ok(None, None));
    assert_eq!(
        b.snapshot(60_000, &p).used_minute.tokens,
        70 + 10 + 20,
        "unknown usage keeps the estimate"
    );
}

#[test]
fn state_and_wire_types_round_trip_through_json() {
    let l = lim(Some(6), Some(2), Some(1_000), None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let leases: Vec<u64> = (0..8)
        .map(|i| lease_of(&b.acquire(i, &p, &req(50, HOUR))))
        .collect();
    b.settle(10, &p, leases[0], &ok(Some(3), Some(4)));
    b.settle(10, &p, leases[1], &SettleOutcome::Burst);
    b.settle(10, &p, leases[2], &cooldown(2_000, "tpm"));
    b.park(10, "free quota", Some(10), ParkOf::Bucket);
    assert!(matches!(
        b.acquire(20, &p, &req(1, HOUR)),
        Admission::Go { probe: true, .. }
    ));
    let json = serde_json::to_string(&b).unwrap();
    for part in [
        "windows", "leases", "cooldown", "park", "probe", "pace", "counters",
    ] {
        assert!(json.contains(part), "busy state lacks {part}: {json}");
    }
    assert_eq!(
        serde_json::from_str::<BucketState>(&json).unwrap(),
        b,
        "{json}"
    );
    assert_eq!(
        serde_json::from_str::<BucketState>("{}").unwrap(),
        BucketState::default()
    );
    let snap = b.snapshot(20, &p);
    assert_eq!(
        serde_json::from_str::<Snapshot>(&serde_json::to_string(&snap).unwrap()).unwrap(),
        snap
    );
    #[rustfmt::skip]
    let wire = [
        (serde_json::to_value(go(3, 5)).unwrap(), r#"{"go":{"lease":3,"at_ms":5,"probe":false,"late_ms":0}}"#),
        (serde_json::to_value(denied(None, DenyReason::Parked("x".into()))).unwrap(), r#"{"denied":{"until_ms":null,"reason":{"parked":"x"}}}"#),
        (serde_json::to_value(denied(Some(1), DenyReason::ProbeInFlight)).unwrap(), r#"{"denied":{"until_ms":1,"reason":"probe_in_flight"}}"#),
        (serde_json::to_value(ok(Some(1), None)).unwrap(), r#"{"ok":{"prompt_tokens":1,"completion_tokens":null,"cached_tokens":0,"cost_micro_usd":0}}"#),
        (serde_json::to_value(SettleOutcome::Burst).unwrap(), r#""burst""#),
    ];
    for (got, want) in wire {
        assert_eq!(
            got,
            serde_json::from_str::<serde_json::Value>(want).unwrap()
        );
    }
}

#[test]
fn state_stays_small_over_hours_of_traffic() {
    let l = lim(Some(60), Some(5), Some(100_000), None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let ask = ask(500, 2_000, 30_000);
    let mut largest = 0;
    for i in 0..40_000u64 {
        let now = i * 250;
        if let Admission::Go { lease, .. } = b.acquire(now, &p, &ask) {
            match i % 5 {
                0 => {} // never settled: expires
                1 => b.settle(now, &p, lease, &SettleOutcome::Released),
                _ => b.settle(now, &p, lease, &ok(Some(100), Some(50))),
            }
        }
        if i % 100 == 0 {
            largest = largest.max(serde_json::to_string(&b).unwrap().len());
        }
    }
    assert!(b.counters.admitted > 10_000, "{:?}", b.counters);
    assert!(largest < 8_000, "state grew to {largest} bytes");
    assert!(
        b.windows.len() <= 62 && b.leases.len() <= 40,
        "{} entries, {} leases",
        b.windows.len(),
        b.leases.len()
    );
    assert_eq!(
        at_of(&b.acquire(40_000 * 250 + HOUR, &p, &ask)),
        40_000 * 250 + HOUR
    );
    assert_eq!(
        (b.windows.len(), b.leases.len()),
        (1, 1),
        "an idle hour prunes everything old"
    );
}

#[test]
fn cost_adds_up_once_per_lease() {
    let l = lim(None, None, None, None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let paid = |prompt, completion, cost| SettleOutcome::Ok {
        prompt_tokens: Some(prompt),
        completion_tokens: Some(completion),
        cached_tokens: prompt / 2,
        cost_micro_usd: cost,
    };
    let a = lease_of(&b.acquire(0, &p, &req(10, 0)));
    b.settle(1, &p, a, &paid(1_000, 100, 1_800));
    b.settle(1, &p, a, &paid(1_000, 100, 1_800));
    let c = lease_of(&b.acquire(1, &p, &req(10, 0)));
    b.settle(2, &p, c, &paid(10, 10, 72));
    let counters = b.snapshot(2, &p).counters;
    assert_eq!(counters.cost_micro_usd, 1_872, "settling twice counts once");
    assert_eq!(counters.cached_tokens, 500 + 5);
}

#[test]
fn a_committed_stream_lives_until_settled_and_its_late_usage_lands() {
    let l = lim(Some(10), None, Some(10_000), None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let short_ttl = ask(100, 0, 1_000);
    let stream = lease_of(&b.acquire(0, &p, &short_ttl));
    let plain = lease_of(&b.acquire(0, &p, &short_ttl));
    b.commit(500, stream);
    assert_eq!(
        b.snapshot(5_000, &p).in_flight,
        1,
        "only the committed stream"
    );
    // 90 s later, long after its entry left the minute window, the stream ends.
    b.settle(90_000, &p, stream, &ok(Some(1_000), Some(4_000)));
    b.settle(90_000, &p, plain, &ok(Some(1), Some(1)));
    assert_eq!(
        b.counters.ok, 1,
        "the uncommitted lease expired and was dropped"
    );
    assert_eq!(
        (b.counters.prompt_tokens, b.counters.completion_tokens),
        (1_000, 4_000)
    );
    let minute = b.snapshot(90_000, &p).used_minute;
    assert_eq!(
        minute,
        usage(0, 5_000),
        "its real tokens land now, not as another request"
    );
    assert_eq!(
        b.acquire(90_000, &p, &req(5_001, 0)),
        denied(Some(150_000), DenyReason::Full),
        "and they count against the token limit"
    );
    b.settle(90_001, &p, stream, &ok(Some(1_000), Some(4_000)));
    assert_eq!(b.counters.ok, 1, "settled once");
}

#[test]
fn a_cancelled_request_keeps_its_slot_and_a_released_one_does_not() {
    let l = lim(Some(2), None, None, None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let sent = lease_of(&b.acquire(0, &p, &req(10, 0)));
    b.settle(1, &p, sent, &SettleOutcome::Cancelled);
    let waiting = lease_of(&b.acquire(1, &p, &req(10, 0)));
    b.settle(2, &p, waiting, &SettleOutcome::Released);
    assert_eq!(b.snapshot(2, &p).used_minute, usage(1, 10));
    assert_eq!((b.counters.cancelled, b.counters.released), (1, 1));
    assert!(matches!(
        b.acquire(2, &p, &req(10, 0)),
        Admission::Go { .. }
    ));
}

#[test]
fn failures_settle_by_what_reached_the_upstream() {
    use crate::classify::LimitKind;
    let cases = [
        (
            Outcome::KeyRefused { reason: "k".into() },
            SettleOutcome::Released,
        ),
        (Outcome::TooLarge, SettleOutcome::Released),
        (Outcome::Retry { after_ms: None }, SettleOutcome::Failed),
        (
            Outcome::Unavailable { cooldown_ms: 9 },
            cooldown(9, "unavailable"),
        ),
        (
            Outcome::Cooldown {
                kind: LimitKind::Tokens,
                cooldown_ms: 5,
                hinted: true,
            },
            cooldown(5, "tokens"),
        ),
    ];
    for (outcome, settle) in cases {
        assert_eq!(SettleOutcome::of_failure(&outcome), settle, "{outcome:?}");
    }
}

#[test]
fn only_facts_about_the_bucket_make_it_busy() {
    use crate::classify::LimitKind;
    let cooling = Outcome::Cooldown {
        kind: LimitKind::Requests,
        cooldown_ms: 100,
        hinted: true,
    };
    assert_eq!(busy_until(&cooling, 5), Some(Some(105)));
    let unhinted = Outcome::Cooldown {
        kind: LimitKind::Requests,
        cooldown_ms: 100,
        hinted: false,
    };
    assert_eq!(
        busy_until(&unhinted, 5),
        None,
        "the bucket decides how long"
    );
    let park = Outcome::Park {
        scope: ParkScope::Bucket,
        reason: "r".into(),
        for_ms: None,
    };
    assert_eq!(busy_until(&park, 5), Some(None));
    for about_one_request in [
        Outcome::TooLarge,
        Outcome::KeyRefused { reason: "k".into() },
        Outcome::Retry { after_ms: Some(1) },
    ] {
        assert_eq!(busy_until(&about_one_request, 5), None);
    }
}

#[test]
fn a_first_window_limit_429_in_a_minute_is_jitter_a_second_is_real() {
    let l = lim(Some(600), Some(10), None, None);
    let p = pol(&l, SPEC);
    let mut b = measured();
    let unhinted = SettleOutcome::Cooldown {
        ms: 60_000,
        kind: "requests".into(),
        hinted: false,
    };
    let a = lease_of(&b.acquire(0, &p, &req(1, 0)));
    b.settle(100, &p, a, &unhinted);
    let snap = b.snapshot(100, &p);
    assert_eq!(
        snap.cooling_until_ms, None,
        "no cooldown, let alone a minute"
    );
    assert_eq!(
        snap.lag_margin_ms, 20,
        "the windows widen by a fiftieth of a second"
    );
    // Another within the minute: the limit is real (someone else uses the account).
    let a = lease_of(&b.acquire(5_000, &p, &req(1, 0)));
    b.settle(5_100, &p, a, &unhinted);
    assert_eq!(b.snapshot(5_100, &p).cooling_until_ms, Some(65_100));
    // The learned margin halves after each quiet minute.
    let later = 5_100 + 3 * 60_000;
    assert_eq!(
        b.snapshot(later, &p).lag_margin_ms,
        40,
        "two steps, not yet relaxed"
    );
    b.acquire(later, &p, &req(1, 0));
    assert_eq!(b.snapshot(later, &p).lag_margin_ms, 5);
}

#[test]
fn a_busy_bucket_stores_a_few_kb() {
    // DashScope's qwen3-max limits, slow start on, every slot taken for three minutes; each
    // request settled with its real usage half a second after its send.
    let limits = lim(Some(600), Some(10), Some(1_000_000), None);
    let policy = Policy {
        slow_start: Some(SlowStart::DASHSCOPE),
        ..pol(&limits, SPEC)
    };
    let mut b = BucketState::default();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let (mut served, mut largest) = (0, 0);
    for now in (0..180_000).step_by(10) {
        if let Admission::Go { lease, at_ms, .. } = b.acquire(now, &policy, &req(1_500, 0)) {
            out.push((lease, at_ms + 500));
            b.record_lag(3);
        }
        while let Some(&(lease, _)) = out.first().filter(|&&(_, end)| end <= now) {
            out.remove(0);
            let used = SettleOutcome::Ok {
                prompt_tokens: Some(300),
                completion_tokens: Some(700),
                cached_tokens: 0,
                cost_micro_usd: 1,
            };
            b.settle(now, &policy, lease, &used);
            served += 1;
        }
        if now % 1_000 == 0 {
            largest = largest.max(serde_json::to_string(&b).map_or(0, |s| s.len()));
        }
    }
    assert!(served > 1_700, "{served} served");
    assert!(largest < 4_000, "{largest} bytes");
}

#[test]
fn headroom_is_the_tightest_share_of_room_left() {
    let limits = lim(Some(60), None, Some(10_000), None);
    let policy = pol(&limits, SPEC);
    let mut b = BucketState::default();
    assert_eq!(b.headroom(0, &policy), 1.0, "idle");
    for i in 0..15 {
        assert!(matches!(
            b.acquire(i, &policy, &req(100, 0)),
            Admission::Go { .. }
        ));
    }
    // 15 of 60 requests, 1,500 of 10,000 tokens: the requests are the tighter.
    assert!((b.headroom(20, &policy) - 0.75).abs() < 1e-9);
    let heavy = req(5_000, 0);
    assert!(matches!(
        b.acquire(20, &policy, &heavy),
        Admission::Go { .. }
    ));
    assert!((b.headroom(20, &policy) - 0.35).abs() < 1e-9, "tokens now");
    assert_eq!(b.headroom(61_000, &policy), 1.0, "the minute passed");
    let none = Limits::default();
    assert_eq!(b.headroom(20, &pol(&none, SPEC)), 1.0, "no limits");
}

#[test]
fn a_state_stored_before_windows_were_packed_is_read_whole() {
    let old = r#"{"windows":[{"at_ms":1000,"tokens":50,"lease":3},{"at_ms":1500,"tokens":7,"tokens_only":true}],
        "park":{"reason":"free quota exhausted","since_ms":900,"until_ms":null},
        "counters":{"admitted":4,"ok":2},"next_lease":4}"#;
    let state = BucketState::from_stored(old);
    let limits = lim(Some(60), None, None, None);
    let view = state.snapshot(2_000, &pol(&limits, SPEC));
    assert_eq!(view.used_minute, usage(1, 57), "the windows kept");
    assert_eq!(view.counters.admitted, 4, "the counters kept");
    assert!(view.parked.is_some(), "the park kept: {view:?}");
    assert_eq!(BucketState::from_stored("not json"), BucketState::default());
    let packed = serde_json::to_string(&state).unwrap_or_default();
    assert_eq!(
        BucketState::from_stored(&packed),
        state,
        "and the new form round-trips"
    );
}

#[test]
fn marks_say_what_changed_for_the_log() {
    let before = Marks::default();
    let parked = Marks {
        parked: Some("free quota exhausted".into()),
        ..Marks::default()
    };
    let events: Vec<&str> = parked
        .changes_since(&before)
        .iter()
        .map(|(e, _)| *e)
        .collect();
    assert_eq!(events, ["bucket_parked"]);
    let events: Vec<&str> = before
        .changes_since(&parked)
        .iter()
        .map(|(e, _)| *e)
        .collect();
    assert_eq!(events, ["bucket_unparked"]);
    let cooling = Marks {
        cooling: Some(("requests".into(), 5)),
        held_until_ms: Some(9),
        ..Marks::default()
    };
    let events: Vec<&str> = cooling
        .changes_since(&before)
        .iter()
        .map(|(e, _)| *e)
        .collect();
    assert_eq!(events, ["bucket_cooling", "bucket_ramp"]);
    assert!(cooling.changes_since(&cooling).is_empty());
    let refused = |keys: &[&str]| Marks {
        refused_keys: keys.iter().map(|k| k.to_string()).collect(),
        ..Marks::default()
    };
    let changes = refused(&["K1", "K2"]).changes_since(&refused(&["K1"]));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0, "bucket_key_refused");
    assert_eq!(
        changes[0].1["keys"],
        serde_json::json!(["K2"]),
        "the new one only"
    );
    assert!(refused(&["K1"]).changes_since(&refused(&["K1"])).is_empty());
    assert!(
        refused(&[]).changes_since(&refused(&["K1"])).is_empty(),
        "a clear is no news"
    );
}

/// Seen under load on bare workerd (`make bench-overhead`, credits off): an isolate whose sends
/// leave later than the bucket's measured spread gave slot after slot back, its lateness
/// reaching the bucket only with the give-back's settle, which the next ask overtook, until
/// the request was given up (502). The next ask carries the lateness itself.
#[test]
fn an_ask_after_a_missed_slot_is_allowed_the_lateness_it_missed_by() {
    let limits = lim(Some(10_000_000), None, None, None);
    let policy = pol(&limits, SPEC);
    let mut b = measured();
    let Admission::Go { late_ms, .. } = b.acquire(1_000, &policy, &req(10, 0)) else {
        panic!("admitted");
    };
    assert_eq!(late_ms, 0, "measured on time: no allowance");
    let retry = AcquireRequest {
        missed_lag_ms: Some(13),
        ..req(10, 0)
    };
    let Admission::Go { late_ms, .. } = b.acquire(1_001, &policy, &retry) else {
        panic!("admitted");
    };
    assert!(late_ms >= 13, "the retry may leave 13 ms late: {late_ms}");
}

#[test]
fn a_credit_ahead_needs_room_now_and_no_pacing_rule_or_park() {
    let limits = lim(Some(600), None, None, None);
    let policy = Policy {
        credit_max: 32,
        ..pol(&limits, SPEC)
    };
    let mut b = BucketState::default();
    let ahead = b.grant_ahead(0, &policy, &req(10, 0));
    assert_eq!(ahead.map(|c| c.count), Some(32), "ample room");
    let paced = Policy {
        slow_start: Some(SlowStart::DASHSCOPE),
        ..policy
    };
    assert_eq!(
        BucketState::default().grant_ahead(0, &paced, &req(10, 0)),
        None
    );
    b.park(1, "free quota", None, ParkOf::Bucket);
    assert_eq!(b.grant_ahead(2, &policy, &req(10, 0)), None, "parked");
    let tight = lim(Some(6), None, None, None);
    let mut full = BucketState::default();
    for now in 0..6 {
        full.acquire(now, &pol(&tight, SPEC), &req(10, 0));
    }
    let policy = Policy {
        credit_max: 32,
        ..pol(&tight, SPEC)
    };
    assert_eq!(full.grant_ahead(10, &policy, &req(10, 0)), None, "no room");
}

#[test]
fn clients_refused_for_capacity_are_told_at_most_once_an_hour() {
    const T0: u64 = 1_795_996_800_000;
    let mut state = BucketState::default();
    let told = |state: &mut BucketState, now_ms: u64| {
        let before = state.marks(now_ms);
        state.passed_on(now_ms, HOUR);
        let events = state.marks(now_ms).changes_since(&before);
        events.iter().map(|(e, _)| *e).collect::<Vec<_>>() == ["clients_refused"]
    };
    assert!(told(&mut state, T0), "the first is told");
    assert!(!told(&mut state, T0 + 1), "not the next");
    assert!(!told(&mut state, T0 + HOUR - 1), "nor within the hour");
    assert!(told(&mut state, T0 + HOUR), "an hour on: told again");
    // Remembered with the state, so a restarted object does not tell it again.
    let json = serde_json::to_string(&state).unwrap();
    let mut state = BucketState::from_stored(&json);
    assert!(!told(&mut state, T0 + HOUR + 1));
}

#[test]
fn clients_failed_for_want_of_a_key_are_told_once_an_hour_or_when_the_secrets_change() {
    const T0: u64 = 1_795_996_800_000;
    let mut state = BucketState::default();
    let told = |state: &mut BucketState, now_ms: u64, secrets: &[&str]| {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let before = state.marks(now_ms);
        state.no_key_set(now_ms, HOUR, &secrets);
        let events = state.marks(now_ms).changes_since(&before);
        let told = serde_json::json!({ "keys": secrets });
        match events.as_slice() {
            [] => false,
            [("clients_failed_no_key", details)] => *details == told,
            other => panic!("{other:?}"),
        }
    };
    assert!(told(&mut state, T0, &["KEY_A"]), "the first is told");
    assert!(!told(&mut state, T0 + 1, &["KEY_A"]), "not the next");
    assert!(
        told(&mut state, T0 + 2, &["KEY_A", "KEY_B"]),
        "other secrets: told"
    );
    assert!(
        !told(&mut state, T0 + HOUR, &["KEY_A", "KEY_B"]),
        "within the hour"
    );
    assert!(
        told(&mut state, T0 + HOUR + 2, &["KEY_A", "KEY_B"]),
        "an hour on"
    );
    let json = serde_json::to_string(&state).unwrap();
    let mut state = BucketState::from_stored(&json);
    assert!(
        !told(&mut state, T0 + HOUR + 3, &["KEY_A", "KEY_B"]),
        "kept"
    );
}

#[test]
fn an_accounts_park_is_told_by_the_bucket_that_learned_it_whatever_merges_into_it() {
    let limits = lim(Some(60), None, None, None);
    let p = pol(&limits, SPEC);
    let of = |b: &BucketState| b.marks(0).parked_of;
    // Learned here (an account-wide outcome of its own request).
    let mut learned = BucketState::default();
    let Admission::Go { lease, .. } = learned.acquire(0, &p, &req(1, 0)) else {
        panic!()
    };
    let arrears = SettleOutcome::Park {
        reason: "Arrearage".into(),
        for_ms: Some(60_000),
        account: true,
    };
    let before = learned.marks(0);
    learned.settle(1, &p, lease, &arrears);
    let changes = learned.marks(1).changes_since(&before);
    assert_eq!(changes[0].1["of"], "account", "{changes:?}");
    // Heard from another bucket later: still this bucket's to tell, coming back too.
    learned.park(2, "Arrearage", Some(60_000), ParkOf::AccountHeard);
    assert_eq!(of(&learned), ParkOf::Account);
    // Heard first: quiet, even if its own request then learns it too.
    let mut heard = BucketState::default();
    heard.park(0, "Arrearage", Some(60_000), ParkOf::AccountHeard);
    heard.park(1, "Arrearage", Some(90_000), ParkOf::Account);
    assert_eq!(of(&heard), ParkOf::AccountHeard);
    let before = heard.marks(1);
    heard.clear(2);
    let changes = heard.marks(2).changes_since(&before);
    assert_eq!(changes[0].0, "bucket_unparked");
    assert_eq!(changes[0].1["of"], "account_heard", "{changes:?}");
}
