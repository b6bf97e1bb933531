//! Sliding windows, case by case: boundaries, effective limits, reconcile, scheduling, brute-force minimality (compiled only under #[cfg(test)]).

use super::*;
use crate::lcg::Lcg;

const SPEC: WindowSpec = WindowSpec {
    second_ms: 1_000,
    minute_ms: 60_000,
};
const FAST: WindowSpec = WindowSpec {
    second_ms: 10,
    minute_ms: 600,
};

fn lim(rpm: Option<u64>, rps: Option<u64>, tpm: Option<u64>, tps: Option<u64>) -> Limits {
    Limits { rpm, rps, tpm, tps }
}

fn log(entries: &[(u64, u64)]) -> Windows {
    let mut w = Windows::default();
    for &(at, tokens) in entries {
        w.reserve(at, tokens);
    }
    w
}

/// Naive check, every window end ms by ms: does (t, tokens) fit next to `w`?
/// Credits (spans ending after `now`) are not spaced.
fn naive_fits(
    w: &Windows,
    now: u64,
    t: u64,
    tokens: u64,
    l: &Limits,
    spec: WindowSpec,
    gap: u64,
) -> bool {
    let spaced = |e: &&Entry| e.requests > 0 && (!e.merged() || e.at_ms <= now);
    if w.entries
        .iter()
        .filter(spaced)
        .any(|e| e.at_ms.abs_diff(t) < gap)
    {
        return false;
    }
    caps(l, spec).iter().all(|c| {
        (t..t + c.window_ms).all(|s| {
            let inside: Vec<&Entry> = w
                .entries
                .iter()
                .filter(|e| e.counts_in(s, c.window_ms))
                .collect();
            let sum: u64 = inside.iter().map(|e| e.tokens).sum();
            let n: u64 = inside.iter().map(|e| e.requests).sum();
            c.requests.is_none_or(|r| n < r) && c.tokens.is_none_or(|k| sum + tokens <= k)
        })
    })
}

/// Brute force over every window: no window ever holds more than its caps.
fn assert_never_over(w: &Windows, l: &Limits, spec: WindowSpec) {
    let last = w.entries.last().map_or(0, |e| e.at_ms);
    for c in caps(l, spec) {
        for s in 0..=last + c.window_ms {
            let inside = w.entries.iter().filter(|e| e.counts_in(s, c.window_ms));
            let (n, sum) = inside.fold((0u64, 0u64), |(n, k), e| (n + e.requests, k + e.tokens));
            assert!(
                c.requests.is_none_or(|r| n <= r),
                "{n} requests in window ending {s}"
            );
            assert!(
                c.tokens.is_none_or(|k| sum <= k),
                "{sum} tokens in window ending {s}"
            );
        }
    }
}

type Case<'a> = (
    &'a str,
    Limits,
    &'a [(u64, u64)],
    u64,
    u64,
    u64,
    Option<u64>,
);

#[test]
fn earliest_start_table() {
    let rpm1 = lim(Some(1), None, None, None);
    let rps1 = lim(None, Some(1), None, None);
    let every_second: Vec<(u64, u64)> = (0..60).map(|i| (i * 1_000, 10)).collect();
    // (name, limits, entries (at, tokens), now, tokens, spacing, expected start)
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("empty: go now", rpm1.clone(), &[], 5, 1, 0, Some(5)),
        ("entry exactly W old no longer counts", rpm1.clone(), &[(0, 1)], 60_000, 1, 0, Some(60_000)),
        ("one ms younger still counts", rpm1.clone(), &[(1, 1)], 60_000, 1, 0, Some(60_001)),
        ("rps: 999 ms old counts", rps1.clone(), &[(0, 1)], 999, 1, 0, Some(1_000)),
        ("rps: 1000 ms old is out", rps1.clone(), &[(0, 1)], 1_000, 1, 0, Some(1_000)),
        ("rps*60 caps the minute below rpm", lim(Some(600), Some(1), None, None), &every_second, 59_500, 1, 0, Some(60_000)),
        ("rpm caps below rps*60", lim(Some(2), Some(10), None, None), &[(0, 1), (10, 1)], 20, 1, 0, Some(60_000)),
        ("rps caps a burst below rpm", lim(Some(600), Some(2), None, None), &[(0, 1), (10, 1)], 20, 1, 0, Some(1_000)),
        ("tps", lim(None, None, None, Some(100)), &[(0, 60)], 0, 50, 0, Some(1_000)),
        ("tps: room left", lim(None, None, None, Some(100)), &[(0, 60)], 0, 40, 0, Some(0)),
        ("tpm waits for enough tokens to leave", lim(None, None, Some(100), None), &[(0, 60), (30_000, 30)], 40_000, 20, 0, Some(60_000)),
        ("tps*60 caps tpm", lim(None, None, Some(1_000_000), Some(10)), &every_second, 59_500, 10, 0, Some(60_000)),
        ("too large for tps", lim(None, None, Some(1_000), Some(10)), &[], 0, 11, 0, None),
        ("too large for tpm", lim(None, None, Some(10), None), &[], 0, 11, 0, None),
        ("exactly tpm fits", lim(None, None, Some(10), None), &[], 0, 10, 0, Some(0)),
        ("no limits", Limits::default(), &[(0, 1), (0, 1)], 7, 1_000_000, 0, Some(7)),
        ("a scheduled entry blocks earlier slots", rpm1.clone(), &[(30_000, 1)], 0, 1, 0, Some(90_000)),
        ("exactly W before a scheduled entry fits", rpm1.clone(), &[(60_000, 1)], 0, 1, 0, Some(0)),
        ("one ms later does not", rpm1.clone(), &[(60_000, 1)], 1, 1, 0, Some(120_000)),
        ("exactly the spacing before an entry fits", Limits::default(), &[(1_000, 1)], 500, 1, 500, Some(500)),
        ("a slot before a scheduled entry", lim(Some(2), None, None, None), &[(0, 1), (90_000, 1)], 10, 1, 0, Some(10)),
        ("spacing after an entry", Limits::default(), &[(0, 1)], 100, 1, 500, Some(500)),
        ("spacing before a scheduled entry", Limits::default(), &[(1_000, 1)], 600, 1, 500, Some(1_500)),
        ("spacing fits between entries", Limits::default(), &[(0, 1), (2_000, 1)], 100, 1, 500, Some(500)),
    ];
    for (name, l, entries, now, tokens, gap, want) in cases {
        let w = log(entries);
        assert_eq!(w.earliest_start(now, &l, SPEC, tokens, gap), want, "{name}");
    }
}

#[test]
fn effective_minute_limit_is_min_of_rpm_and_rps_times_60() {
    #[rustfmt::skip]
    let cases = [(Some(600), Some(1), 60), (Some(30), Some(10), 30), (None, Some(2), 120), (Some(6), None, 6)];
    for (rpm, rps, want) in cases {
        let l = lim(rpm, rps, None, None);
        let mut w = Windows::default();
        while let Some(at) = w.earliest_start(0, &l, SPEC, 1, 0).filter(|&t| t < 60_000) {
            w.reserve(at, 1);
        }
        assert_eq!(w.len(), want, "rpm {rpm:?} rps {rps:?}");
        assert_never_over(&w, &l, SPEC);
    }
}

#[test]
fn reconcile_down_and_up_moves_the_token_window() {
    let l = lim(None, None, Some(100), None);
    let mut w = Windows::default();
    w.reserve(0, 80);
    assert_eq!(
        w.earliest_start(10, &l, SPEC, 30, 0),
        Some(60_000),
        "estimate counts"
    );
    assert!(w.reconcile(0, 80, None, 20));
    assert_eq!(
        w.earliest_start(10, &l, SPEC, 30, 0),
        Some(10),
        "actual usage was lower"
    );
    assert_eq!(
        w.usage(10, SPEC.minute_ms),
        Used {
            requests: 1,
            tokens: 20
        }
    );
    assert!(w.reconcile(0, 20, None, 95));
    assert_eq!(
        w.earliest_start(10, &l, SPEC, 30, 0),
        Some(60_000),
        "actual usage was higher"
    );
    assert_eq!(w.earliest_start(10, &l, SPEC, 5, 0), Some(10));
    assert!(!w.reconcile(5, 95, None, 1), "no request at that time");
    assert!(!w.reconcile(0, 80, None, 1), "nor with those tokens");
}

#[test]
fn release_prune_and_usage() {
    let mut w = log(&[(0, 10), (500, 20), (1_000, 30), (90_000, 40)]);
    assert_eq!(
        w.usage(1_000, 1_000),
        Used {
            requests: 2,
            tokens: 50
        }
    );
    assert_eq!(
        w.usage(1_000, 60_000),
        Used {
            requests: 3,
            tokens: 60
        }
    );
    assert!(w.release(500, 20, None));
    assert!(!w.release(500, 20, None), "released twice");
    assert_eq!(
        w.usage(1_000, 60_000),
        Used {
            requests: 2,
            tokens: 40
        }
    );
    w.prune(60_000, SPEC);
    assert_eq!(
        w.entries().iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![1_000, 90_000]
    );
    w.prune(1_000_000, SPEC);
    assert!(w.is_empty());
}

/// Greedy admissions with scheduling: returns the start times.
fn schedule(spec: WindowSpec, scale: u64, l: &Limits, n: u64, w: &mut Windows) -> Vec<Option<u64>> {
    let mut rng = Lcg(7);
    (0..n)
        .map(|i| {
            let now = i * 500 / scale;
            let tokens = 1 + rng.below(30);
            let at = w.earliest_start(now, l, spec, tokens, 0);
            if let Some(at) = at {
                w.reserve(at, tokens);
            }
            at
        })
        .collect()
}

#[test]
fn scheduled_slots_are_never_double_booked() {
    let l = lim(Some(6), Some(2), Some(100), None);
    let mut w = Windows::default();
    let starts = schedule(SPEC, 1, &l, 20, &mut w);
    assert!(starts.iter().all(Option::is_some));
    assert!(
        starts.iter().flatten().any(|&t| t >= 120_000),
        "far enough to schedule ahead"
    );
    assert_never_over(&w, &l, SPEC);
    // Compressed time gives the same schedule, scaled.
    let mut fast = Windows::default();
    let scaled: Vec<Option<u64>> = schedule(FAST, 100, &l, 20, &mut fast)
        .iter()
        .map(|t| t.map(|t| t * 100))
        .collect();
    assert_eq!(scaled, starts);
    assert_never_over(&fast, &l, FAST);
}

#[test]
fn earliest_start_is_the_first_fitting_ms() {
    let spec = WindowSpec {
        second_ms: 10,
        minute_ms: 120,
    };
    let mut rng = Lcg(42);
    for case in 0..300 {
        let pick = |rng: &mut Lcg, n: u64| (rng.below(3) > 0).then(|| 1 + rng.below(n));
        let l = lim(
            pick(&mut rng, 8),
            pick(&mut rng, 3),
            pick(&mut rng, 60),
            pick(&mut rng, 30),
        );
        let mut w = Windows::default();
        for _ in 0..rng.below(14) {
            w.reserve(rng.below(200), rng.below(10));
        }
        let now = rng.below(150);
        for _ in 0..rng.below(3) {
            let from = rng.below(now + 1);
            let n = rng.below(4);
            w.reserve_credit(from, (from, from + rng.below(40)), n, n * rng.below(10));
        }
        let tokens = rng.below(12);
        let gap = [0, 0, 3, 7][rng.below(4) as usize];
        let got = w.earliest_start(now, &l, spec, tokens, gap);
        let fits = |t| naive_fits(&w, now, t, tokens, &l, spec, gap);
        match got {
            None => assert!(caps(&l, spec)
                .iter()
                .any(|c| c.tokens.is_some_and(|k| tokens > k))),
            Some(t) => {
                assert!(fits(t), "case {case}: {t} does not fit");
                assert!(
                    (now..t).all(|x| !fits(x)),
                    "case {case}: an earlier ms fits than {t}"
                );
            }
        }
    }
}

/// Random reservations, credits, releases, reconciles and late tokens, applied to the truth
/// (every request with its identity) and alike to two windows that find requests by slot and
/// tokens (or credit), one of them compacted after every step: both always answer within the
/// truth.
#[test]
fn compacted_windows_never_admit_what_the_exact_log_refuses() {
    let spec = WindowSpec {
        second_ms: 100,
        minute_ms: 6_000,
    };
    let mut rng = Lcg(11);
    for case in 0..60 {
        let pick = |rng: &mut Lcg, n: u64| (rng.below(3) > 0).then(|| 1 + rng.below(n));
        let l = lim(
            pick(&mut rng, 400),
            pick(&mut rng, 12),
            pick(&mut rng, 4_000),
            pick(&mut rng, 300),
        );
        let (mut plain, mut compacted) = (Windows::default(), Windows::default());
        // The truth: entries by identity; live requests as (entry index, slot, tokens, credit).
        let mut truth: Vec<Entry> = Vec::new();
        let mut live: Vec<(usize, u64, u64, Option<u64>)> = Vec::new();
        let mut now = 0;
        for step in 0..400 {
            now += rng.below(40);
            let mut sorted = truth.clone();
            sorted.sort_by_key(|e| e.at_ms);
            let exact = Windows { entries: sorted };
            let tokens = rng.below(40);
            let gap = [0, 0, 5][rng.below(3) as usize];
            let want = exact.earliest_start(now, &l, spec, tokens, gap);
            for (name, w) in [("plain", &plain), ("compacted", &compacted)] {
                let Some(t) = w.earliest_start(now, &l, spec, tokens, gap) else {
                    continue;
                };
                // The limits, judged from t (spacing depends on what is past when asked).
                assert_eq!(
                    exact.earliest_start(t, &l, spec, tokens, 0),
                    Some(t),
                    "case {case} step {step}: {name} {t} does not fit the truth"
                );
                assert!(want.is_some_and(|w| w <= t), "case {case} step {step}");
            }
            let reserve = compacted.earliest_start(now, &l, spec, tokens, gap);
            if let Some(t) = reserve.filter(|t| t - now < 300) {
                plain.reserve(t, tokens);
                compacted.reserve(t, tokens);
                truth.push(Entry::one(t, tokens, 1));
                live.push((truth.len() - 1, t, tokens, None));
            }
            match rng.below(7) {
                0 if !live.is_empty() => {
                    let pick = rng.below(live.len() as u64) as usize;
                    let (i, at, k, credit) = live.swap_remove(pick);
                    if let Some(e) = truth.get_mut(i) {
                        e.requests -= 1;
                        e.tokens -= k;
                    }
                    plain.release(at, k, credit);
                    compacted.release(at, k, credit);
                }
                1 if !live.is_empty() => {
                    let pick = rng.below(live.len() as u64) as usize;
                    let (i, at, k, credit) = live.swap_remove(pick);
                    let actual = rng.below(80);
                    if let Some(e) = truth.get_mut(i) {
                        e.tokens = e.tokens - k + actual;
                    }
                    for w in [&mut plain, &mut compacted] {
                        if !w.reconcile(at, k, credit, actual) {
                            w.add_tokens(now, actual);
                        }
                    }
                }
                2 => {
                    let k = rng.below(30);
                    plain.add_tokens(now, k);
                    compacted.add_tokens(now, k);
                    truth.push(Entry::one(now, k, 0));
                }
                3 => {
                    // A credit of n admissions of k tokens, spent (or given back) later.
                    let (n, k) = (1 + rng.below(4), rng.below(30));
                    let until = now + rng.below(60);
                    let id = step;
                    plain.reserve_credit(id, (now, until), n, n * k);
                    compacted.reserve_credit(id, (now, until), n, n * k);
                    truth.push(Entry {
                        at_ms: until,
                        tokens: n * k,
                        requests: n,
                        from_ms: now,
                        credit: Some(id),
                    });
                    live.extend((0..n).map(|_| (truth.len() - 1, now, k, Some(id))));
                }
                _ => {}
            }
            let widened = WindowSpec {
                second_ms: spec.second_ms + rng.below(20),
                minute_ms: spec.minute_ms + rng.below(20),
            };
            plain.prune(now, widened);
            compacted.prune(now, widened);
            // Some credits' admissions are all settled: those may merge.
            let open: Vec<u64> = live.iter().filter_map(|l| l.3).collect();
            compacted.compact(now, spec, 2 * widened.second_ms, &open);
            live.retain(|&(_, at, _, _)| at + spec.minute_ms > now);
        }
    }
}

/// 1-token requests offered every `every_ms` for `for_ms`, admitted only at once: how many were
/// admitted, and the largest stored form seen (sampled every 100 offers).
fn admitted_at_steady_rate(l: &Limits, every_ms: u64, for_ms: u64, compact: bool) -> (u64, usize) {
    let mut w = Windows::default();
    let (mut admitted, mut largest) = (0, 0);
    let mut now = 0;
    while now < for_ms {
        if w.earliest_start(now, l, SPEC, 1, 0) == Some(now) {
            w.reserve(now, 1);
            admitted += 1;
        }
        w.prune(now, SPEC);
        if compact {
            w.compact(now, SPEC, 2 * SPEC.second_ms, &[]);
        }
        if (now / every_ms).is_multiple_of(100) {
            largest = largest.max(serde_json::to_string(&w).map_or(0, |s| s.len()));
        }
        now += every_ms;
    }
    (admitted, largest)
}

#[test]
fn compaction_costs_at_most_a_granule_of_the_minute() {
    // Offered exactly the limit for five minutes: the exact log admits every one.
    let l = lim(Some(600), None, None, None);
    let (exact, _) = admitted_at_steady_rate(&l, 100, 300_000, false);
    let (compacted, _) = admitted_at_steady_rate(&l, 100, 300_000, true);
    assert_eq!(exact, 3_000);
    let floor = exact - exact / GRANULES_PER_MINUTE - 1;
    assert!(
        (floor..=exact).contains(&compacted),
        "compacted {compacted}, exact {exact}"
    );
}

#[test]
fn stored_windows_stay_a_few_kb_at_any_rate() {
    // DashScope's qwen3-max limits at full rate: today's log would be 600 entries.
    let dashscope = lim(Some(600), Some(10), Some(1_000_000), None);
    let (_, size) = admitted_at_steady_rate(&dashscope, 100, 180_000, true);
    assert!(size < 4_000, "{size} bytes at 600 RPM");
    // No limits at all, 1,000 requests a second (the exact log would hold 60,000).
    let (admitted, size) = admitted_at_steady_rate(&Limits::default(), 1, 150_000, true);
    assert_eq!(admitted, 150_000);
    assert!(size < 8_000, "{size} bytes at 60,000 RPM");
}

#[test]
fn the_stored_form_round_trips() {
    let mut w = log(&[(1_000, 5), (1_200, 7), (70_000, 9), (70_005, 0)]);
    w.add_tokens(70_001, 3);
    w.compact(70_003, SPEC, 2_000, &[]);
    assert!(w.entries().iter().any(Entry::merged), "{w:?}");
    let json = serde_json::to_string(&w).unwrap_or_default();
    let back: Windows = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, w, "{json}");
    let mut back = back;
    assert!(
        back.release(1_200, 7, None),
        "a merged request can still be released"
    );
    assert_eq!(back.usage(70_003, SPEC.minute_ms).requests, 1);
}

#[test]
fn the_minute_use_counts_what_a_request_now_must_fit_and_when_it_all_clears() {
    let now = 100_000;
    let mut w = log(&[(30_000, 7), (50_000, 10), (99_000, 20), (100_500, 30)]);
    w.reserve_credit(9, (100_000, 100_400), 4, 40);
    // Late tokens of a request already counted: no request.
    w.add_tokens(100_600, 5);
    let seen = w.minute_use(now, SPEC);
    // 30_000 has left every window ending from now on; the scheduled slot has not.
    assert_eq!(seen.used, w.counted_from(now, SPEC.minute_ms));
    assert_eq!(
        seen.used,
        Used {
            requests: 7,
            tokens: 105
        }
    );
    assert_eq!(seen.requests_clear_ms, 100_500 + 60_000, "the slot is last");
    assert_eq!(
        seen.tokens_clear_ms,
        100_600 + 60_000,
        "the late tokens are"
    );
    let empty = Windows::default().minute_use(now, SPEC);
    assert_eq!((empty.requests_clear_ms, empty.tokens_clear_ms), (now, now));
    assert_eq!(empty.used, Used::default());
}
