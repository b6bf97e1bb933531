//! Credits against the truth: random asks, spends, returns and expiries never put more into any window than its limit (compiled only under #[cfg(test)]).

use super::*;
use crate::bucket::{AcquireRequest, Admission, BucketState, Policy, SettleOutcome};
use crate::lcg::Lcg;

const SPEC: WindowSpec = WindowSpec {
    second_ms: 100,
    minute_ms: 6_000,
};

/// Every window of `window_ms` ending at any ms holds at most `limit` of the sends' weights.
pub(crate) fn assert_within(sends: &[(u64, u64)], window_ms: u64, limit: Option<u64>, what: &str) {
    let Some(limit) = limit else { return };
    let mut sorted = sends.to_vec();
    sorted.sort();
    let mut sum = 0;
    let mut left = 0;
    for (i, &(at, weight)) in sorted.iter().enumerate() {
        sum += weight;
        while sorted.get(left).is_some_and(|&(a, _)| a + window_ms <= at) {
            sum -= sorted.get(left).map_or(0, |&(_, w)| w);
            left += 1;
        }
        assert!(
            sum <= limit,
            "{what}: {sum} > {limit} in the window ending {at} (send {i})"
        );
    }
}

#[test]
fn credits_never_let_a_window_exceed_its_limit() {
    let mut rng = Lcg(5);
    let mut granted = 0;
    for case in 0..80 {
        let pick = |rng: &mut Lcg, n: u64| (rng.below(4) > 0).then(|| 2 + rng.below(n));
        let limits = Limits {
            rpm: pick(&mut rng, 600),
            rps: pick(&mut rng, 40),
            tpm: pick(&mut rng, 60_000),
            tps: pick(&mut rng, 3_000),
        };
        let policy = Policy {
            limits: &limits,
            spec: SPEC,
            slow_start: None,
            credit_max: 8,
        };
        let mut b = BucketState::default();
        // Credits held by four isolates (each asks for the next ahead, as the glue does);
        // requests sent: (at, tokens) per lease.
        let mut held: Vec<Holding> = vec![Holding::default(); 4];
        let mut sent: Vec<(u64, u64, u64)> = Vec::new();
        let mut now = 0;
        let busy = 1 + rng.below(20);
        for _ in 0..1_500 {
            now += rng.below(busy);
            let tokens = 1 + rng.below(60);
            let isolate = rng.below(4) as usize;
            let Some(slot) = held.get_mut(isolate) else {
                continue;
            };
            let (spent, unspent) = slot.spend(now, tokens);
            b.give_back(now, &policy, &unspent);
            if slot.wants_next(now, life_ms(SPEC)) {
                let ask = AcquireRequest {
                    est_tokens: tokens,
                    max_wait_ms: 0,
                    lease_ttl_ms: 60_000,
                    credit: true,
                    missed_lag_ms: None,
                };
                if let Some(c) = b.grant_ahead(now, &policy, &ask) {
                    granted += c.count;
                    b.give_back(now, &policy, &slot.keep(c));
                }
            }
            let lease = match spent {
                Some((lease, _)) => Some((lease, now)),
                None => {
                    let ask = AcquireRequest {
                        est_tokens: tokens,
                        max_wait_ms: rng.below(300),
                        lease_ttl_ms: 60_000,
                        credit: slot.is_empty(),
                        missed_lag_ms: None,
                    };
                    match b.acquire(now, &policy, &ask) {
                        Admission::Go {
                            lease,
                            at_ms,
                            credit,
                            ..
                        } => {
                            if let Some(c) = credit {
                                granted += c.count;
                                b.give_back(now, &policy, &slot.keep(c));
                            }
                            Some((lease, at_ms))
                        }
                        Admission::Denied { .. } => None,
                    }
                }
            };
            let Some((lease, at)) = lease else { continue };
            // Settled at once at the bucket (its time is `now`): the send itself is at `at`.
            let outcome = match rng.below(5) {
                0 => SettleOutcome::Released,
                1 => SettleOutcome::Failed,
                _ => {
                    // Real usage never exceeds the estimate (its output is capped by max_tokens).
                    let used = rng.below(tokens + 1);
                    SettleOutcome::Ok {
                        prompt_tokens: Some(used / 2),
                        completion_tokens: Some(used - used / 2),
                        cached_tokens: 0,
                        cost_micro_usd: 0,
                    }
                }
            };
            let counted = match &outcome {
                SettleOutcome::Released => None,
                SettleOutcome::Failed => Some(0),
                SettleOutcome::Ok {
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => Some(prompt_tokens.unwrap_or(0) + completion_tokens.unwrap_or(0)),
                _ => None,
            };
            if let Some(used) = counted {
                sent.push((lease, at, used));
            }
            b.settle(now, &policy, lease, &outcome);
        }
        let requests: Vec<(u64, u64)> = sent.iter().map(|&(_, at, _)| (at, 1)).collect();
        let tokens: Vec<(u64, u64)> = sent.iter().map(|&(_, at, k)| (at, k)).collect();
        let what = |w: &str| format!("case {case} {limits:?}: {w}");
        assert_within(&requests, SPEC.second_ms, limits.rps, &what("rps"));
        assert_within(&requests, SPEC.minute_ms, limits.rpm, &what("rpm"));
        assert_within(&tokens, SPEC.second_ms, limits.tps, &what("tps"));
        assert_within(&tokens, SPEC.minute_ms, limits.tpm, &what("tpm"));
    }
    assert!(granted > 1_000, "credits were handed out: {granted}");
}

#[test]
fn credits_shrink_to_none_near_a_limit() {
    let limits = Limits {
        rpm: Some(100),
        ..Limits::default()
    };
    let w = Windows::default();
    assert_eq!(size(&w, 0, &limits, SPEC, 10, 8), 8, "idle: the most");
    let mut w = Windows::default();
    for at in 0..60 {
        w.reserve(at, 10);
    }
    // 100 - 60 - 1 = 39 left: a quarter is 9, capped at 8.
    assert_eq!(size(&w, 60, &limits, SPEC, 10, 8), 8);
    for at in 60..90 {
        w.reserve(at, 10);
    }
    assert_eq!(size(&w, 90, &limits, SPEC, 10, 8), 2, "9 left");
    for at in 90..96 {
        w.reserve(at, 10);
    }
    assert_eq!(
        size(&w, 96, &limits, SPEC, 10, 8),
        0,
        "3 left: asked one by one"
    );
    assert_eq!(size(&Windows::default(), 0, &limits, SPEC, 10, 0), 0, "off");
}

#[test]
fn a_credit_is_spent_once_per_admission_within_its_life() {
    let mut c = Credit {
        first_lease: 10,
        count: 3,
        tokens: 50,
        until_ms: 1_000,
        late_ms: 5,
        spent: 0,
    };
    assert_eq!(c.spend(900, 51), None, "larger than each admission");
    assert_eq!(c.spend(900, 50), Some((10, 105)));
    assert_eq!(c.unspent(), vec![11, 12]);
    assert_eq!(c.spend(1_001, 1), None, "expired");
    assert!(c.done(1_001));
    assert_eq!(c.spend(1_000, 1), Some((11, 5)));
    assert_eq!(c.spend(1_000, 1), Some((12, 5)));
    assert!(c.done(0), "all spent");
    assert!(c.unspent().is_empty());
}

#[test]
fn a_credit_is_one_record_settled_once_per_admission() {
    let limits = Limits {
        rpm: Some(100_000),
        ..Limits::default()
    };
    let policy = Policy {
        limits: &limits,
        spec: SPEC,
        slow_start: None,
        credit_max: 100,
    };
    let mut b = BucketState::default();
    let ask = AcquireRequest {
        est_tokens: 10,
        max_wait_ms: 0,
        lease_ttl_ms: 60_000,
        credit: true,
        missed_lag_ms: None,
    };
    let Admission::Go {
        credit: Some(credit),
        ..
    } = b.acquire(0, &policy, &ask)
    else {
        panic!("a credit with room");
    };
    assert_eq!(credit.count, MAX_COUNT, "capped whatever the config says");
    let stored = serde_json::to_string(&b).unwrap_or_default();
    // One record for the credit, not one per admission (the counters alone are ~450 bytes).
    assert!(stored.len() < 800, "{} bytes: {stored}", stored.len());
    assert_eq!(b.snapshot(1, &policy).in_flight, 1 + MAX_COUNT);
    let leases = credit.unspent();
    b.give_back(1, &policy, &leases);
    b.give_back(1, &policy, &leases);
    let view = b.snapshot(1, &policy);
    assert_eq!(view.counters.released, MAX_COUNT, "each admission once");
    assert_eq!(view.in_flight, 1);
    assert_eq!(
        view.used_minute.requests, 1,
        "only the asking request still counts"
    );
}

fn credit(first_lease: u64, count: u64, until_ms: u64) -> Credit {
    Credit {
        first_lease,
        count,
        tokens: 100,
        until_ms,
        late_ms: 0,
        spent: 0,
    }
}

#[test]
fn a_holding_asks_for_the_next_credit_at_a_quarter_left_and_moves_on_to_it() {
    let mut h = Holding::default();
    assert!(
        !h.wants_next(0, 500),
        "nothing held: the request asks inline"
    );
    assert!(h.keep(credit(10, 8, 500)).is_empty());
    for lease in 10..16 {
        assert_eq!(h.spend(0, 50), (Some((lease, 500)), vec![]));
    }
    assert!(h.wants_next(0, 500), "two of eight left");
    assert!(h.keep(credit(20, 8, 600)).is_empty());
    assert!(!h.wants_next(0, 500), "the next is held");
    assert_eq!(h.spend(0, 50).0, Some((16, 500)));
    assert_eq!(h.spend(0, 50).0, Some((17, 500)));
    assert_eq!(
        h.spend(0, 50).0,
        Some((20, 600)),
        "the first is spent: the next takes over"
    );
    let (spent, unspent) = h.spend(650, 50);
    assert_eq!(spent, None, "past its life");
    assert_eq!(
        unspent,
        (21..28).collect::<Vec<_>>(),
        "its leftovers go back"
    );
    assert!(h.is_empty());
}

#[test]
fn a_holding_asks_ahead_late_in_a_credits_life_and_keeps_at_most_two() {
    let mut h = Holding::default();
    h.keep(credit(1, 8, 500));
    assert!(!h.wants_next(300, 500));
    assert!(h.wants_next(400, 500), "a fifth of its life left");
    h.keep(credit(10, 8, 900));
    assert_eq!(h.keep(credit(20, 4, 900)), (1..9).collect::<Vec<_>>());
    assert_eq!(h.drop_all().len(), 12);
}

#[test]
fn a_meters_minute_seen_counts_the_credits_admissions_as_the_clients_own_until_spent() {
    let mut h = Holding::default();
    let minute = |requests, tokens, clear_ms| MinuteUse {
        used: Used { requests, tokens },
        requests_clear_ms: clear_ms,
        tokens_clear_ms: clear_ms,
    };
    assert!(h.keep(credit(10, 8, 500)).is_empty());
    assert_eq!(h.seen(), None, "nothing seen of a bucket's");
    // The meter counted 10 requests, 8 of them this credit's admissions (100 tokens each).
    assert_eq!(
        h.observe(minute(10, 1_000, 60_500), 60_000),
        minute(2, 1_000, 60_500)
    );
    h.spend(0, 50);
    h.spend(0, 50);
    assert_eq!(
        h.seen(),
        Some(minute(4, 1_000, 60_500)),
        "tokens stay counted"
    );
    // A request larger than the admissions held takes one back to the meter: the last.
    assert_eq!(h.surrender(0), Some(17));
    assert_eq!(h.spend(0, 50).0, Some((12, 500)));
    // A credit asked ahead: its tokens reserved, all of it clear a minute after its end.
    h.keep(credit(20, 4, 700));
    assert_eq!(h.seen(), Some(minute(5, 1_400, 60_700)));
    assert_eq!(h.drop_all().len(), 4 + 4, "17 went back");
    // The meter's next answer is taken whole, less what is held unspent.
    h.keep(credit(30, 4, 900));
    h.spend(0, 50);
    assert_eq!(
        h.observe(minute(31, 3_100, 60_900), 60_000),
        minute(28, 3_100, 60_900)
    );
    assert_eq!(
        h.surrender(901),
        None,
        "a credit past its life is not spent"
    );
}

#[test]
fn only_a_served_answer_may_wait_to_settle() {
    let served = SettleOutcome::Ok {
        prompt_tokens: Some(9),
        completion_tokens: Some(8),
        cached_tokens: 0,
        cost_micro_usd: 0,
    };
    assert!(settle_may_wait(&served));
    for outcome in [
        SettleOutcome::Released,
        SettleOutcome::Cancelled,
        SettleOutcome::Failed,
    ] {
        assert!(!settle_may_wait(&outcome), "{outcome:?}");
    }
}
