//! Pacing, proven: no upstream window over its limit for arrivals shifted by up to the measured
//! jitter (property test against an exact sliding log), the slow-start and surge-recovery
//! curves (compiled only under #[cfg(test)]).

use super::*;
use crate::bucket::{AcquireRequest, Admission, BucketState, Policy, SettleOutcome};
use proptest::prelude::*;

const SPEC: WindowSpec = WindowSpec {
    second_ms: 1_000,
    minute_ms: 60_000,
};

/// DashScope's qwen3-max limits per account.
pub(super) fn qwen3_max() -> Limits {
    Limits {
        rpm: Some(600),
        rps: Some(10),
        tpm: Some(1_000_000),
        tps: None,
    }
}

pub(super) fn policy(limits: &Limits, slow_start: Option<SlowStart>) -> Policy<'_> {
    Policy {
        limits,
        spec: SPEC,
        slow_start,
        credit_max: 0,
    }
}

pub(super) fn ask(tokens: u64, max_wait_ms: u64) -> AcquireRequest {
    AcquireRequest {
        est_tokens: tokens,
        max_wait_ms,
        lease_ttl_ms: 3_600_000,
        credit: false,
        missed_lag_ms: None,
    }
}

/// Acquires at each time of `asks` (sorted), returning the admitted slots (denials dropped).
fn admit(b: &mut BucketState, p: &Policy, asks: &[(u64, u64)], max_wait: u64) -> Vec<(u64, u64)> {
    asks.iter()
        .filter_map(
            |&(now, tokens)| match b.acquire(now, p, &ask(tokens, max_wait)) {
                Admission::Go { at_ms, .. } => Some((at_ms, tokens)),
                Admission::Denied { .. } => None,
            },
        )
        .collect()
}

/// The most requests and tokens an exact sliding log of `window_ms` ever holds.
fn peak(arrivals: &[(u64, u64)], window_ms: u64) -> (u64, u64) {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let (mut most, mut most_tokens) = (0, 0);
    for (i, &(end, _)) in sorted.iter().enumerate() {
        let inside = sorted[..=i].iter().filter(|(t, _)| t + window_ms > end);
        let (n, tokens) = inside.fold((0, 0), |(n, k), (_, t)| (n + 1, k + t));
        most = most.max(n);
        most_tokens = most_tokens.max(tokens);
    }
    (most, most_tokens)
}

/// Requests arriving in each second [from + k s, from + (k+1) s).
/// A bucket whose sends were measured to land on time (no lateness spread).
fn measured() -> BucketState {
    let mut b = BucketState::default();
    for _ in 0..8 {
        b.record_lag(0);
    }
    b
}

fn per_second(slots: &[u64], from: u64, seconds: u64) -> Vec<usize> {
    (0..seconds)
        .map(|k| {
            let (a, b) = (from + k * 1_000, from + (k + 1) * 1_000);
            slots.iter().filter(|&&t| t >= a && t < b).count()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the demand and however late each send reaches the upstream (within the measured
    /// spread), no upstream window (counted at arrival, exact sliding log) exceeds its limit.
    #[test]
    fn no_upstream_window_over_its_limit_with_jitter(
        gaps in prop::collection::vec(0u64..250, 1..300),
        tokens in prop::collection::vec(1u64..40_000, 300),
        jitter_ms in 0u64..120,
        shifts in prop::collection::vec(0.0f64..=1.0, 300),
        slow in any::<bool>(),
        max_wait in prop::sample::select(vec![0u64, 1_000, 30_000]),
    ) {
        let limits = qwen3_max();
        let p = policy(&limits, slow.then_some(SlowStart::DASHSCOPE));
        let mut b = BucketState::default();
        // The bucket has measured sends landing between on time and `jitter_ms` late.
        for i in 0..8 {
            b.record_lag((jitter_ms * i / 7) as i64);
        }
        let mut now = 10_000;
        let asks: Vec<(u64, u64)> = gaps
            .iter()
            .zip(&tokens)
            .map(|(gap, t)| {
                now += gap;
                (now, *t)
            })
            .collect();
        let slots = admit(&mut b, &p, &asks, max_wait);
        // Each send reaches the upstream its slot plus some lateness within the spread.
        let arrivals: Vec<(u64, u64)> = slots
            .iter()
            .zip(&shifts)
            .map(|(&(at, t), s)| (at + (s * jitter_ms as f64) as u64, t))
            .collect();
        let (rps, _) = peak(&arrivals, 1_000);
        let (rpm, tpm) = peak(&arrivals, 60_000);
        prop_assert!(rps <= 10, "{rps} requests in one second");
        prop_assert!(rpm <= 600, "{rpm} requests in one minute");
        prop_assert!(tpm <= 1_000_000, "{tpm} tokens in one minute");
    }

    /// A slow-started bucket never grows its rate faster than a surge rule stricter than its own
    /// would refuse: the upstream's "at most `growth` times the second before, plus a floor",
    /// with DashScope's simulated rule (floor 3, growth 2), checked at every arrival.
    #[test]
    fn slow_start_never_trips_a_growth_rule(
        gaps in prop::collection::vec(0u64..400, 1..300),
        jitter_ms in 0u64..60,
        shifts in prop::collection::vec(0.0f64..=1.0, 300),
    ) {
        prop_assert_eq!(growth_rule_breach(&gaps, jitter_ms, &shifts), None);
    }
}

/// Where sends slow-started at `gaps` apart, landing late by `shifts` x `jitter_ms` (the
/// measured spread), break the upstream's growth rule (floor 3, growth 2), if anywhere.
fn growth_rule_breach(gaps: &[u64], jitter_ms: u64, shifts: &[f64]) -> Option<String> {
    let limits = qwen3_max();
    let p = policy(&limits, Some(SlowStart::DASHSCOPE));
    let mut b = BucketState::default();
    for i in 0..8 {
        b.record_lag((jitter_ms * i / 7) as i64);
    }
    let mut now = 5_000;
    let asks: Vec<(u64, u64)> = gaps
        .iter()
        .map(|g| {
            now += g;
            (now, 100)
        })
        .collect();
    let slots = admit(&mut b, &p, &asks, 60_000);
    let mut arrivals: Vec<u64> = slots
        .iter()
        .zip(shifts.iter().chain(std::iter::repeat(&0.0)))
        .map(|(&(at, _), s)| at + (s * jitter_ms as f64) as u64)
        .collect();
    arrivals.sort_unstable();
    arrivals.iter().enumerate().find_map(|(i, &t)| {
        let last = arrivals[..i].iter().filter(|&&a| a + 1_000 > t).count() as u64;
        let before = arrivals[..i]
            .iter()
            .filter(|&&a| a + 2_000 > t && a + 1_000 <= t)
            .count() as u64;
        (last >= 3 + 2 * before).then(|| format!("at {t}: {last} after {before}"))
    })
}

/// Found by the property above: one send landing 42 ms late left the upstream's second before
/// a later burst, which the rule had counted on (the second before must be counted narrowed).
#[test]
fn a_late_send_leaving_the_second_before_does_not_trip_the_growth_rule() {
    let gaps = [
        0, 0, 0, 172, 301, 291, 343, 71, 391, 206, 35, 326, 145, 295, 85, 201, 298, 321, 188, 388,
        52, 347, 39, 128, 87, 388, 380, 298, 78, 87, 362, 105, 51, 105, 0,
    ];
    let mut shifts = [0.0; 35];
    shifts[27] = 0.788_894_936_947_762_9;
    assert_eq!(growth_rule_breach(&gaps, 54, &shifts), None);
}

#[test]
fn from_quiet_a_backlog_ramps_up_along_the_documented_curve() {
    let limits = qwen3_max();
    let p = policy(&limits, Some(SlowStart::DASHSCOPE));
    let mut b = measured();
    // 100 requests at once at an idle bucket, willing to wait.
    let asks = vec![(1_000, 100); 100];
    let slots: Vec<u64> = admit(&mut b, &p, &asks, 60_000)
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(slots.len(), 100);
    let seconds = per_second(&slots, 1_000, 8);
    // Each second: at most the floor (3) plus 1.5 x the second before, at most 10.
    let mut before = 0;
    for (k, &n) in seconds.iter().enumerate() {
        let allowed = (3.0 + 1.5 * before as f64) as usize;
        assert!(
            n <= allowed.min(10),
            "second {k}: {n} after {before} ({seconds:?})"
        );
        before = n;
    }
    assert_eq!(
        seconds[0], 3,
        "three tenths of the full rate from quiet: {seconds:?}"
    );
    assert!(
        seconds[3..].iter().all(|&n| n == 10),
        "full rate by the fourth second: {seconds:?}"
    );
    // Evenly spread within each second, never bunched.
    for pair in slots.windows(2) {
        assert!(pair[1] - pair[0] >= 100, "{pair:?}");
    }
}

#[test]
fn a_surge_holds_the_working_rate_and_recovers_with_a_remembered_gentler_growth() {
    let limits = qwen3_max();
    let slow = Some(SlowStart::DASHSCOPE);
    let p = policy(&limits, slow);
    let mut b = measured();
    // Busy at the full rate for 10 s.
    let asks: Vec<(u64, u64)> = (0..100).map(|i| (i * 100, 100)).collect();
    let first = admit(&mut b, &p, &asks, 60_000);
    let end = first.last().map_or(0, |s| s.0);
    // A surge 429 on a request sent at the end.
    let Admission::Go { lease, at_ms, .. } = b.acquire(end, &p, &ask(100, 60_000)) else {
        panic!("admitted");
    };
    b.settle(at_ms, &p, lease, &SettleOutcome::Burst);
    let snap = b.snapshot(at_ms, &p);
    assert_eq!(snap.growth, Some(1.25), "the growth's excess is halved");
    // A backlog right after: held at the working rate (10/s) for 2 s, never more.
    let asks = vec![(at_ms, 100); 80];
    let slots: Vec<u64> = admit(&mut b, &p, &asks, 60_000)
        .iter()
        .map(|s| s.0)
        .collect();
    let seconds = per_second(&slots, at_ms, 6);
    assert!(seconds.iter().all(|&n| n <= 10), "{seconds:?}");
    assert!(seconds[0] >= 8, "the working rate, not a cut: {seconds:?}");
    // The lesson is remembered, and relaxes back toward 1.5 after a quiet minute.
    let json = serde_json::to_string(&b).unwrap();
    let mut b: BucketState = serde_json::from_str(&json).unwrap();
    assert_eq!(b.snapshot(at_ms + 30_000, &p).growth, Some(1.25));
    b.acquire(at_ms + 200_000, &p, &ask(1, 0));
    assert_eq!(b.snapshot(at_ms + 200_000, &p).growth, Some(1.375));
}

#[test]
fn without_slow_start_a_surge_teaches_one() {
    let limits = qwen3_max();
    let p = policy(&limits, None);
    let mut b = BucketState::default();
    assert_eq!(b.snapshot(0, &p).growth, None);
    let Admission::Go { lease, .. } = b.acquire(0, &p, &ask(1, 0)) else {
        panic!("admitted");
    };
    b.settle(10, &p, lease, &SettleOutcome::Burst);
    assert_eq!(b.snapshot(10, &p).growth, Some(1.25));
}

#[test]
fn rps_limits_are_evenly_spaced_and_rpm_only_limits_may_burst() {
    let rps = Limits {
        rps: Some(10),
        ..Limits::default()
    };
    let mut b = measured();
    let slots = admit(&mut b, &policy(&rps, None), &[(0, 1); 5], 60_000);
    assert_eq!(
        slots.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0, 100, 200, 300, 400]
    );
    let rpm = Limits {
        rpm: Some(6),
        ..Limits::default()
    };
    let mut b = BucketState::default();
    let slots = admit(&mut b, &policy(&rpm, None), &[(0, 1); 6], 0);
    assert_eq!(slots.len(), 6, "a minute's budget at once, as RPM allows");
}

#[test]
fn lag_is_how_late_a_send_left_plus_half_the_transit() {
    assert_eq!(lag_ms(1_000, 1_030, 1_050, None), 30);
    assert_eq!(lag_ms(1_000, 1_030, 1_130, Some(60)), 30 + 20);
    assert_eq!(
        lag_ms(1_000, 990, 1_000, Some(500)),
        -10,
        "early on another clock"
    );
    let mut pace = Pace::default();
    assert_eq!(pace.lag_spread_ms(), 100, "unmeasured: assume 100 ms");
    for lag in 0..7 {
        pace.record_lag(lag);
    }
    assert_eq!(pace.lag_spread_ms(), 100, "7 samples are not enough");
    for lag in 7..80 {
        pace.record_lag(lag);
    }
    assert_eq!(pace.lag_spread_ms(), 63, "the newest 64 samples");
    assert_eq!(pace.widened(SPEC).second_ms, 1_063);
}
