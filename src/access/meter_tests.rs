use super::*;
use crate::calendar::DAY_MS;
use crate::lcg::Lcg;

const SPEC: WindowSpec = WindowSpec {
    second_ms: 1_000,
    minute_ms: 60_000,
};
/// 2026-11-30T00:00:00Z.
const T0: u64 = 1_795_996_800_000;

fn limits(rpm: Option<u64>, tpm: Option<u64>, daily: Option<u64>, usd: Option<u64>) -> MeterLimits {
    MeterLimits {
        rpm,
        tpm,
        daily_tokens: daily,
        monthly_micro_usd: usd,
    }
}

fn ask(est_tokens: u64, ttl_ms: u64) -> Ask {
    Ask {
        est_tokens,
        ttl_ms,
        credit_max: 0,
        max_wait_ms: 0,
    }
}

fn served(tokens: u64, micro_usd: u64) -> Spent {
    Spent {
        tokens: Some(tokens),
        micro_usd,
        sent: true,
    }
}

#[test]
fn rpm_refuses_with_the_time_room_returns_and_never_lets_more_in_a_minute() {
    let l = limits(Some(5), None, None, None);
    let mut m = Meter::default();
    let mut admitted = Vec::new();
    let mut rng = Lcg(7);
    let mut t = T0;
    for _ in 0..400 {
        t += rng.below(2_000);
        match m.admit(t, &l, SPEC, ask(10, 60_000)) {
            Verdict::Go { lease, .. } => {
                admitted.push(t);
                m.settle(t, SPEC, lease, served(10, 0));
            }
            Verdict::Rate { until_ms, .. } => {
                assert!(until_ms > t);
                // Room really returns then.
                let mut probe = m.clone();
                assert!(matches!(
                    probe.admit(until_ms, &l, SPEC, ask(10, 60_000)),
                    Verdict::Go { .. }
                ));
            }
            other => panic!("{other:?}"),
        }
    }
    for &a in &admitted {
        let in_minute = admitted
            .iter()
            .filter(|&&b| b <= a && b + 60_000 > a)
            .count();
        assert!(
            in_minute <= 5,
            "{in_minute} admitted in the minute ending {a}"
        );
    }
    assert!(admitted.len() > 20);
}

#[test]
fn tpm_counts_what_requests_really_used() {
    let l = limits(None, Some(1_000), None, None);
    let mut m = Meter::default();
    let Verdict::Go { lease, .. } = m.admit(T0, &l, SPEC, ask(900, 60_000)) else {
        panic!()
    };
    assert!(matches!(
        m.admit(T0, &l, SPEC, ask(200, 60_000)),
        Verdict::Rate { .. }
    ));
    m.settle(T0 + 10, SPEC, lease, served(100, 0));
    assert!(matches!(
        m.admit(T0 + 10, &l, SPEC, ask(800, 60_000)),
        Verdict::Go { .. }
    ));
    assert_eq!(m.admit(T0, &l, SPEC, ask(1_001, 60_000)), Verdict::TooLarge);
}

#[test]
fn the_daily_cap_counts_requests_in_flight_and_ends_at_utc_midnight() {
    let l = limits(None, None, Some(1_000), None);
    let mut m = Meter::default();
    let Verdict::Go { lease, .. } = m.admit(T0 + 5, &l, SPEC, ask(600, 600_000)) else {
        panic!()
    };
    // In flight, the estimate counts: 600 + 600 > 1,000.
    let refused = m.admit(T0 + 6, &l, SPEC, ask(600, 600_000));
    assert_eq!(
        refused,
        Verdict::Budget {
            which: "daily_tokens".into(),
            until_ms: T0 + DAY_MS,
            credits_open: false,
        }
    );
    m.settle(T0 + 7, SPEC, lease, served(300, 0));
    assert!(matches!(
        m.admit(T0 + 8, &l, SPEC, ask(600, 600_000)),
        Verdict::Go { .. }
    ));
    assert!(matches!(
        m.admit(T0 + 9, &l, SPEC, ask(200, 600_000)),
        Verdict::Budget { .. }
    ));
    // A new day starts empty (the old day's reservations have expired by then).
    assert!(matches!(
        m.admit(T0 + DAY_MS, &l, SPEC, ask(900, 600_000)),
        Verdict::Go { .. }
    ));
}

#[test]
fn the_monthly_spend_cap_admits_while_settled_spend_is_under_it() {
    let l = limits(None, None, None, Some(1_000_000));
    let mut m = Meter::default();
    for _ in 0..3 {
        let Verdict::Go { lease, .. } = m.admit(T0, &l, SPEC, ask(10, 60_000)) else {
            panic!()
        };
        m.settle(T0, SPEC, lease, served(10, 400_000));
    }
    let Verdict::Budget {
        which, until_ms, ..
    } = m.admit(T0, &l, SPEC, ask(10, 60_000))
    else {
        panic!()
    };
    assert_eq!(which, "monthly_usd");
    assert_eq!(until_ms, T0 + DAY_MS); // 2026-12-01
    assert!(matches!(
        m.admit(T0 + DAY_MS, &l, SPEC, ask(10, 60_000)),
        Verdict::Go { .. }
    ));
    let view = m.view(T0 + DAY_MS, l, SPEC);
    assert_eq!(view.month_usd, 0.0);
    assert_eq!(view.totals.micro_usd, 1_200_000);
}

/// The levels `budget_news` tells now, as (which, level).
fn news(
    m: &mut Meter,
    now_ms: u64,
    l: &MeterLimits,
    v: Option<&Verdict>,
) -> Vec<(&'static str, Level)> {
    let news = m.budget_news(now_ms, l, v);
    news.iter().map(|n| (n.which, n.level)).collect()
}

#[test]
fn a_budget_running_low_then_spent_is_told_once_a_period_each() {
    // The last day of November: the day and the month end together, and each is told.
    let l = limits(None, None, Some(1_000), Some(1_000_000));
    let mut m = Meter::default();
    let Verdict::Go { lease, .. } = m.admit(T0, &l, SPEC, ask(700, 60_000)) else {
        panic!()
    };
    assert_eq!(news(&mut m, T0, &l, None), [], "70 % used: nothing to tell");
    let Verdict::Go { .. } = m.admit(T0 + 1, &l, SPEC, ask(150, 60_000)) else {
        panic!()
    };
    // 850 of 1,000 (in flight counted): low, once.
    let told = m.budget_news(T0 + 1, &l, None);
    assert_eq!(told.len(), 1);
    let low = told[0];
    assert_eq!(
        (low.which, low.level, low.used, low.limit),
        ("daily_tokens", Level::Low, 850, 1_000)
    );
    assert_eq!(low.until_ms, T0 + DAY_MS);
    assert_eq!(news(&mut m, T0 + 2, &l, None), []);
    let day = m.admit(T0 + 3, &l, SPEC, ask(200, 60_000));
    assert_eq!(
        news(&mut m, T0 + 3, &l, Some(&day)),
        [("daily_tokens", Level::Spent)]
    );
    let again = m.admit(T0 + 4, &l, SPEC, ask(200, 60_000));
    assert_eq!(news(&mut m, T0 + 4, &l, Some(&again)), []);
    // The month: spent straight from room (one answer cost it all), never low after.
    m.settle(T0 + 5, SPEC, lease, served(700, 1_000_000));
    let month = m.admit(T0 + 6, &l, SPEC, ask(10, 60_000));
    assert!(matches!(&month, Verdict::Budget { which, .. } if which == "monthly_usd"));
    assert_eq!(
        news(&mut m, T0 + 6, &l, Some(&month)),
        [("monthly_usd", Level::Spent)]
    );
    assert_eq!(
        news(&mut m, T0 + 7, &l, None),
        [],
        "low is no news once spent"
    );
    assert_eq!(news(&mut m, T0 + 7, &l, Some(&Verdict::TooLarge)), []);
    // Remembered with the state, so a restarted object does not tell it again.
    let mut m: Meter = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    let again = m.admit(T0 + 8, &l, SPEC, ask(10, 60_000));
    assert_eq!(news(&mut m, T0 + 8, &l, Some(&again)), []);
    // December 1st: the day's budget running low is news again (the month's spend is new too).
    let dec = T0 + DAY_MS;
    assert!(matches!(
        m.admit(dec, &l, SPEC, ask(900, 60_000)),
        Verdict::Go { .. }
    ));
    assert_eq!(news(&mut m, dec, &l, None), [("daily_tokens", Level::Low)]);
    // Both at once: each told.
    let mut m = Meter::default();
    let Verdict::Go { lease, .. } = m.admit(T0, &l, SPEC, ask(900, 60_000)) else {
        panic!()
    };
    m.settle(T0 + 1, SPEC, lease, served(900, 900_000));
    assert_eq!(
        news(&mut m, T0 + 1, &l, None),
        [("daily_tokens", Level::Low), ("monthly_usd", Level::Low)]
    );
}

#[test]
fn a_request_never_sent_gives_everything_back_and_settles_once() {
    let l = limits(Some(1), Some(100), Some(100), None);
    let mut m = Meter::default();
    let Verdict::Go { lease, .. } = m.admit(T0, &l, SPEC, ask(100, 60_000)) else {
        panic!()
    };
    let unsent = Spent {
        tokens: None,
        micro_usd: 0,
        sent: false,
    };
    m.settle(T0 + 1, SPEC, lease, unsent);
    m.settle(T0 + 1, SPEC, lease, served(100, 5));
    let Verdict::Go { .. } = m.admit(T0 + 2, &l, SPEC, ask(100, 60_000)) else {
        panic!()
    };
    assert_eq!(m.view(T0 + 2, l, SPEC).totals.micro_usd, 0);
}

#[test]
fn reset_forgets_the_periods_but_keeps_requests_in_flight() {
    let l = limits(Some(2), None, Some(100), None);
    let mut m = Meter::default();
    let Verdict::Go { lease, .. } = m.admit(T0, &l, SPEC, ask(60, 60_000)) else {
        panic!()
    };
    let Verdict::Go { .. } = m.admit(T0, &l, SPEC, ask(40, 60_000)) else {
        panic!()
    };
    assert!(matches!(
        m.admit(T0, &l, SPEC, ask(1, 60_000)),
        Verdict::Budget { .. }
    ));
    m.reset(T0 + 1, SPEC);
    let v = m.view(T0 + 1, l, SPEC);
    assert_eq!((v.in_flight, v.day_tokens, v.minute_requests), (2, 100, 2));
    m.settle(T0 + 2, SPEC, lease, served(10, 0));
    assert_eq!(m.view(T0 + 2, l, SPEC).day_tokens, 50);
}

#[test]
fn state_stays_small_at_any_rate() {
    let l = limits(Some(100_000), None, None, None);
    let mut m = Meter::default();
    for i in 0..50_000u64 {
        let t = T0 + i * 3;
        if let Verdict::Go { lease, .. } = m.admit(t, &l, SPEC, ask(20, 60_000)) {
            m.settle(t, SPEC, lease, served(20, 1));
        }
    }
    let size = serde_json::to_string(&m).unwrap().len();
    assert!(size < 8_000, "{size} bytes");
}

#[test]
fn narrowing_takes_the_tighter_of_each_limit() {
    let client = limits(Some(60), None, Some(1_000), Some(5));
    let token = limits(Some(100), Some(50), Some(500), None);
    assert_eq!(
        client.narrowed(token),
        limits(Some(60), Some(50), Some(500), Some(5))
    );
    assert!(MeterLimits::default().is_unlimited());
}

#[test]
fn a_batch_of_settles_settles_each_once() {
    let limits = limits(Some(10), None, Some(1_000), None);
    let call = |op| MeterCall {
        client: None,
        limits,
        spec: SPEC,
        op,
    };
    let mut m = Meter::default();
    let admit = || MeterOp::Admit(ask(100, 60_000));
    let leases: Vec<u64> = (0..2)
        .map(|_| match m.apply(T0, &call(admit())) {
            MeterReply::Verdict(Verdict::Go { lease, .. }) => lease,
            other => panic!("{other:?}"),
        })
        .collect();
    let settle = |lease| MeterOp::Settle {
        lease,
        spent: served(10, 7),
    };
    let batch = MeterOp::Batch(vec![
        settle(leases[0]),
        settle(leases[1]),
        settle(leases[1]),
    ]);
    let MeterReply::View(view) = m.apply(T0 + 1, &call(batch)) else {
        panic!()
    };
    assert_eq!(
        (view.in_flight, view.day_tokens, view.totals.micro_usd),
        (0, 20, 14)
    );
    // The batch's change reaches the history like any call's.
    let MeterReply::History { minutes, .. } =
        m.apply(T0 + 2, &call(MeterOp::History { minutes_from: 0 }))
    else {
        panic!()
    };
    assert_eq!(minutes.last().map(|(_, r)| r.cost_micro_usd), Some(14));
}

#[test]
fn settles_ride_ahead_of_an_admission_which_answers_the_batch() {
    // rpm 1: the first request was sent, so it keeps its slot and the admission riding
    // behind its settle is refused for the rate. The batch answers with that verdict, not a
    // view, and the settle went first.
    let one_a_minute = limits(Some(1), None, Some(1_000), None);
    let mut m = Meter::default();
    let call = |op| MeterCall {
        client: None,
        limits: one_a_minute,
        spec: SPEC,
        op,
    };
    let admit = || MeterOp::Admit(ask(100, 60_000));
    let MeterReply::Verdict(Verdict::Go { lease, .. }) = m.apply(T0, &call(admit())) else {
        panic!()
    };
    let settle = MeterOp::Settle {
        lease,
        spent: served(10, 0),
    };
    let batch = MeterOp::Batch(vec![settle, admit()]);
    match m.apply(T0 + 1, &call(batch)) {
        MeterReply::Verdict(Verdict::Rate { .. }) => {}
        other => panic!("{other:?}"),
    }
    // The settle went first: the day counts 10 tokens, not the 100 reserved.
    let MeterReply::View(view) = m.apply(T0 + 2, &call(MeterOp::View)) else {
        panic!()
    };
    assert_eq!((view.in_flight, view.day_tokens), (0, 10));
}

#[test]
fn only_a_sent_request_under_no_monthly_cap_may_wait_to_settle() {
    let daily = limits(Some(60), None, Some(1_000), None);
    let monthly = limits(Some(60), None, None, Some(5_000_000));
    assert!(settle_may_wait(&daily, &served(10, 0)));
    assert!(!settle_may_wait(&monthly, &served(10, 0)));
    let unsent = Spent {
        tokens: None,
        micro_usd: 0,
        sent: false,
    };
    assert!(!settle_may_wait(&daily, &unsent));
}

/// Four isolates' credits against the truth: random arrivals, credits asked beside an
/// admission and ahead of need, spends, unspent admissions given back or left to expire,
/// requests served (never above their estimate) or never sent: no minute window ever holds
/// more requests or tokens than the limits, nor any UTC day more tokens than its cap.
#[test]
fn credits_never_let_a_minute_or_a_day_exceed_its_limit() {
    use crate::bucket::credit::tests::assert_within;
    use crate::bucket::credit::{life_ms, Holding};
    let mut rng = Lcg(11);
    let mut granted = 0;
    for case in 0..60 {
        let pick = |rng: &mut Lcg, n: u64| (rng.below(4) > 0).then(|| 2 + rng.below(n));
        let l = limits(
            pick(&mut rng, 900),
            pick(&mut rng, 90_000),
            pick(&mut rng, 200_000),
            None,
        );
        let mut m = Meter::default();
        let mut held: Vec<Holding> = vec![Holding::default(); 4];
        // Requests sent: (at, tokens used).
        let mut sent: Vec<(u64, u64)> = Vec::new();
        // Over a UTC midnight.
        let mut now = T0 + DAY_MS - 90_000;
        let busy = 1 + rng.below(400);
        for _ in 0..2_000 {
            now += rng.below(busy);
            let est = 1 + rng.below(300);
            let isolate = rng.below(4) as usize;
            let Some(slot) = held.get_mut(isolate) else {
                continue;
            };
            // An isolate that goes quiet leaves its credits to expire.
            if rng.below(50) == 0 {
                *slot = Holding::default();
            }
            let unsent = Spent {
                tokens: None,
                micro_usd: 0,
                sent: false,
            };
            let (spent, unspent) = slot.spend(now, est);
            for lease in unspent {
                m.settle(now, SPEC, lease, unsent);
            }
            let wants = Ask {
                est_tokens: est,
                ttl_ms: 60_000,
                credit_max: 16,
                max_wait_ms: 0,
            };
            if slot.wants_next(now, life_ms(SPEC)) {
                if let Some(c) = m.grant_ahead(now, &l, SPEC, wants) {
                    granted += c.count;
                    for lease in slot.keep(c) {
                        m.settle(now, SPEC, lease, unsent);
                    }
                }
            }
            let lease = match spent {
                Some((lease, _)) => Some(lease),
                None => {
                    let credit_max = if slot.is_empty() { 16 } else { 0 };
                    match m.admit(
                        now,
                        &l,
                        SPEC,
                        Ask {
                            credit_max,
                            ..wants
                        },
                    ) {
                        Verdict::Go { lease, credit, .. } => {
                            if let Some(c) = credit {
                                granted += c.count;
                                for lease in slot.keep(c) {
                                    m.settle(now, SPEC, lease, unsent);
                                }
                            }
                            Some(lease)
                        }
                        _ => None,
                    }
                }
            };
            let Some(lease) = lease else { continue };
            if rng.below(6) == 0 {
                m.settle(now, SPEC, lease, unsent);
            } else {
                let used = rng.below(est + 1);
                sent.push((now, used));
                m.settle(now, SPEC, lease, served(used, 0));
            }
        }
        let what = |w: &str| format!("case {case} {l:?}: {w}");
        let requests: Vec<(u64, u64)> = sent.iter().map(|&(at, _)| (at, 1)).collect();
        assert_within(&requests, SPEC.minute_ms, l.rpm, &what("rpm"));
        assert_within(&sent, SPEC.minute_ms, l.tpm, &what("tpm"));
        if let Some(cap) = l.daily_tokens {
            for day in [T0 / DAY_MS, T0 / DAY_MS + 1] {
                let used: u64 = (sent.iter().filter(|(at, _)| at / DAY_MS == day))
                    .map(|&(_, k)| k)
                    .sum();
                assert!(used <= cap, "{}: {used} > {cap}", what("daily"));
            }
        }
    }
    assert!(granted > 2_000, "credits were handed out: {granted}");
}

#[test]
fn credits_shrink_to_none_near_a_limit_and_never_come_under_a_monthly_cap() {
    let wants = |est_tokens| Ask {
        est_tokens,
        ttl_ms: 60_000,
        credit_max: 32,
        max_wait_ms: 0,
    };
    let credit_of = |v: Verdict| match v {
        Verdict::Go { credit, .. } => credit.map_or(0, |c| c.count),
        other => panic!("{other:?}"),
    };
    // 100 rpm: a quarter of the 99 left, then a quarter of what that leaves, ...
    let l = limits(Some(100), None, None, None);
    let mut m = Meter::default();
    let sizes: Vec<u64> = (0..12)
        .map(|i| credit_of(m.admit(T0 + i, &l, SPEC, wants(10))))
        .collect();
    assert_eq!(sizes.first(), Some(&24));
    assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
    assert_eq!(sizes.last(), Some(&0), "{sizes:?}");
    // The day's tokens bound it too.
    let l = limits(None, None, Some(1_000), None);
    assert_eq!(
        credit_of(Meter::default().admit(T0, &l, SPEC, wants(10))),
        24
    );
    // A monthly spend cap: none, ever.
    let l = limits(Some(1_000), None, None, Some(5_000_000));
    let mut m = Meter::default();
    assert_eq!(credit_of(m.admit(T0, &l, SPEC, wants(10))), 0);
    assert_eq!(m.grant_ahead(T0, &l, SPEC, wants(10)), None);
}

#[test]
fn a_credit_counts_in_the_windows_and_the_day_until_its_admissions_settle_or_come_back() {
    let l = limits(Some(1_000), None, Some(100_000), None);
    let ask = Ask {
        est_tokens: 100,
        ttl_ms: 60_000,
        credit_max: 8,
        max_wait_ms: 0,
    };
    let mut m = Meter::default();
    let Verdict::Go {
        lease,
        credit: Some(c),
        ..
    } = m.admit(T0, &l, SPEC, ask)
    else {
        panic!()
    };
    assert_eq!((c.first_lease, c.count, c.tokens), (lease + 1, 8, 100));
    let v = m.view(T0 + 1, l, SPEC);
    assert_eq!((v.minute_requests, v.day_tokens, v.in_flight), (9, 900, 9));
    // Admitted: the request asked for; a credit's admissions once used.
    assert_eq!(v.totals.admitted, 1);
    // One spent and served with 30 tokens, settled twice (the second is ignored); one given
    // back; the rest left to expire.
    m.settle(T0 + 2, SPEC, c.first_lease, served(30, 0));
    m.settle(T0 + 2, SPEC, c.first_lease, served(30, 0));
    let unsent = Spent {
        tokens: None,
        micro_usd: 0,
        sent: false,
    };
    m.settle(T0 + 3, SPEC, c.first_lease + 1, unsent);
    let v = m.view(T0 + 4, l, SPEC);
    assert_eq!((v.minute_requests, v.in_flight), (8, 7));
    assert_eq!(v.day_tokens, 30 + 7 * 100);
    assert_eq!((v.totals.admitted, v.totals.tokens), (2, 30));
    assert_eq!(v.totals.credited, 1);
    // After the credit's life and the reservation's ttl, the record is gone from the day's
    // count (its estimates stay in the minute windows until they leave them).
    let later = T0 + credit::life_ms(SPEC) + 60_001;
    assert_eq!(m.view(later, l, SPEC).in_flight, 0);
    assert_eq!(m.view(later, l, SPEC).day_tokens, 30);
    // The state survives its stored form.
    let back: Meter = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn calls_and_state_written_before_credits_still_read() {
    let admit: MeterOp = serde_json::from_str(r#"{"admit":{"est_tokens":5,"ttl_ms":10}}"#).unwrap();
    assert_eq!(admit, MeterOp::Admit(ask(5, 10)));
    let go: Verdict = serde_json::from_str(r#"{"go":{"lease":4}}"#).unwrap();
    assert_eq!(
        go,
        Verdict::Go {
            lease: 4,
            credit: None,
            at_ms: None,
            minute_use: Default::default(),
        }
    );
    let stored = r#"{"open":[[3,{"at_ms":1,"tokens":2,"expires_ms":90000}]],"next_lease":4}"#;
    let mut m: Meter = serde_json::from_str(stored).unwrap();
    let l = limits(None, None, Some(100), None);
    assert_eq!(m.view(5, l, SPEC).in_flight, 1);
    m.settle(6, SPEC, 3, served(2, 0));
    assert_eq!(m.view(7, l, SPEC).in_flight, 0);
}

#[test]
fn a_refusal_while_credits_are_open_is_counted_by_the_isolate_that_gives_it() {
    let l = limits(Some(10), None, None, None);
    let wants = Ask {
        est_tokens: 10,
        ttl_ms: 60_000,
        credit_max: 8,
        max_wait_ms: 0,
    };
    let mut m = Meter::default();
    let Verdict::Go {
        credit: Some(c), ..
    } = m.admit(T0, &l, SPEC, wants)
    else {
        panic!()
    };
    assert_eq!(c.count, 2);
    // Fill the minute without credits, then one more: refused, not counted, flagged.
    let plain = Ask {
        credit_max: 0,
        ..wants
    };
    for i in 1..8 {
        assert!(matches!(
            m.admit(T0 + i, &l, SPEC, plain),
            Verdict::Go { .. }
        ));
    }
    let refused = m.admit(T0 + 9, &l, SPEC, plain);
    assert!(
        matches!(
            refused,
            Verdict::Rate {
                credits_open: true,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(m.view(T0 + 9, l, SPEC).totals.rate_limited, 0);
    assert_eq!(refused.uncounted(), Some(false));
    // The isolate holding the credit served it from there: nothing to count. Another had
    // none and refused: it says so.
    m.refused(false);
    assert_eq!(m.view(T0 + 9, l, SPEC).totals.rate_limited, 1);
    // Once the credit's life is over, refusals count at once again.
    let after = c.until_ms + 1;
    let late = m.admit(after, &l, SPEC, plain);
    assert!(
        matches!(
            late,
            Verdict::Rate {
                credits_open: false,
                ..
            }
        ),
        "{late:?}"
    );
    assert_eq!(m.view(after, l, SPEC).totals.rate_limited, 2);
    assert_eq!(late.uncounted(), None);
}

/// A request that may wait (`Ask::max_wait_ms`) over the rate is given the first slot with
/// room, never further away than its wait; counted at their slots, admissions never pass a
/// minute limit; one that may not wait that long is refused with the time room returns.
#[test]
fn a_request_that_may_wait_gets_the_first_slot_with_room_within_its_wait() {
    let l = limits(Some(5), Some(2_000), None, None);
    let mut rng = Lcg(11);
    let mut m = Meter::default();
    let mut slots: Vec<(u64, u64)> = Vec::new();
    let (mut t, mut scheduled, mut refused) = (T0, 0, 0);
    for _ in 0..600 {
        t += rng.below(3_000);
        let wants = Ask {
            est_tokens: 50 + rng.below(300),
            ttl_ms: 60_000,
            credit_max: 0,
            max_wait_ms: [0, 5_000, 30_000, 90_000][rng.below(4) as usize],
        };
        let before = m.clone();
        match m.admit(t, &l, SPEC, wants) {
            Verdict::Go { at_ms, credit, .. } => {
                assert!(credit.is_none());
                let at = at_ms.unwrap_or(t);
                assert!(at >= t && at - t <= wants.max_wait_ms, "{at} for {t}");
                if at > t {
                    scheduled += 1;
                    // The first slot with room: asked to wait less, the request is refused
                    // with that very time.
                    let shorter = Ask {
                        max_wait_ms: at - t - 1,
                        ..wants
                    };
                    let mut probe = before.clone();
                    assert!(matches!(
                        probe.admit(t, &l, SPEC, shorter),
                        Verdict::Rate { until_ms, .. } if until_ms == at
                    ));
                }
                slots.push((at, wants.est_tokens));
            }
            Verdict::Rate { until_ms, .. } => {
                assert!(until_ms - t > wants.max_wait_ms);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for &(end, _) in &slots {
        let minute = slots
            .iter()
            .filter(|(at, _)| *at <= end && at + 60_000 > end);
        let (requests, tokens) = minute.fold((0, 0), |(r, k), (_, tokens)| (r + 1, k + tokens));
        assert!(
            requests <= 5,
            "{requests} requests in the minute ending {end}"
        );
        assert!(
            tokens <= 2_000,
            "{tokens} tokens in the minute ending {end}"
        );
    }
    assert!(
        scheduled > 20 && refused > 20,
        "{scheduled} scheduled, {refused} refused"
    );
}

/// A slot given for later is held: later asks queue behind it; given back unsent (the
/// request ended before its slot), it is free again.
#[test]
fn a_slot_given_for_later_is_held_until_given_back() {
    let l = limits(Some(2), None, None, None);
    let mut m = Meter::default();
    let wants = |max_wait_ms| Ask {
        est_tokens: 10,
        ttl_ms: 120_000,
        credit_max: 0,
        max_wait_ms,
    };
    for _ in 0..2 {
        assert!(matches!(
            m.admit(T0, &l, SPEC, wants(0)),
            Verdict::Go { at_ms: None, .. }
        ));
    }
    let Verdict::Go {
        lease,
        at_ms: Some(at),
        ..
    } = m.admit(T0 + 10, &l, SPEC, wants(61_000))
    else {
        panic!("no slot")
    };
    assert!((T0 + 60_000..=T0 + 60_500).contains(&at), "{}", at - T0);
    assert!(matches!(
        m.admit(T0 + 20, &l, SPEC, wants(61_000)),
        Verdict::Go { at_ms: Some(a), .. } if a == at
    ));
    // Both slots at `at` are taken: the next room is a minute after them.
    assert!(matches!(
        m.admit(T0 + 30, &l, SPEC, wants(61_000)),
        Verdict::Rate { until_ms, .. } if until_ms >= at + 60_000
    ));
    m.settle(T0 + 40, SPEC, lease, Spent::default());
    assert!(matches!(
        m.admit(T0 + 50, &l, SPEC, wants(61_000)),
        Verdict::Go { at_ms: Some(a), .. } if a == at
    ));
    let view = m.view(T0 + 60, l, SPEC);
    assert_eq!((view.totals.admitted, view.totals.rate_limited), (4, 1));
    assert_eq!(
        view.totals.scheduled, 3,
        "each slot given for later counted"
    );
    let told = (at - T0 - 10) + (at - T0 - 20) + (at - T0 - 50);
    assert_eq!(view.totals.wait_ms, told, "with the waits it was told");
}

/// One isolate's admission as the glue makes it (`glue::meter`): spent from a credit held,
/// else asked, keeping a credit handed out beside it. Its lease, and the meter's minute as
/// seen from there.
fn admit_seen(
    m: &mut Meter,
    held: &mut crate::bucket::credit::Holding,
    now: u64,
    l: &MeterLimits,
    wants: Ask,
) -> Option<(u64, MinuteUse)> {
    let unsent = Spent {
        tokens: None,
        micro_usd: 0,
        sent: false,
    };
    let (spent, mut unspent) = held.spend(now, wants.est_tokens);
    if spent.is_none() {
        unspent.extend(held.surrender(now));
    }
    for lease in unspent {
        m.settle(now, SPEC, lease, unsent);
    }
    if let Some((lease, _)) = spent {
        if held.wants_next(now, crate::bucket::credit::life_ms(SPEC)) {
            if let Some(c) = m.grant_ahead(now, l, SPEC, wants) {
                for lease in held.keep(c) {
                    m.settle(now, SPEC, lease, unsent);
                }
            }
        }
        return Some((lease, held.seen()?));
    }
    let credit_max = if held.is_empty() { wants.credit_max } else { 0 };
    match m.admit(
        now,
        l,
        SPEC,
        Ask {
            credit_max,
            ..wants
        },
    ) {
        Verdict::Go {
            lease,
            credit,
            minute_use,
            ..
        } => {
            for lease in credit.map(|c| held.keep(c)).unwrap_or_default() {
                m.settle(now, SPEC, lease, unsent);
            }
            Some((lease, held.observe(minute_use, SPEC.minute_ms)))
        }
        _ => None,
    }
}

/// Requests (of no tokens) the client could still have admitted right now through this
/// isolate, its ended credits given back first as its next request would: at most `cap`.
fn room_left(
    m: &Meter,
    held: &crate::bucket::credit::Holding,
    now: u64,
    l: &MeterLimits,
    cap: u64,
) -> u64 {
    let (mut m, mut held) = (m.clone(), held.clone());
    let mut n = 0;
    while n < cap && admit_seen(&mut m, &mut held, now, l, ask(0, 60_000)).is_some() {
        n += 1;
    }
    n
}

/// What the `x-ratelimit-*` headers tell a client whose requests all go through one isolate
/// never promises more than its meter admits: random arrivals and sizes, credits handed out,
/// spent, ended and given back, answers settled below their estimates; after each admission,
/// as many requests as the headers say remain are admitted at once, and a request of the
/// tokens they say remain is too.
#[test]
fn the_room_a_client_is_told_it_has_left_is_never_more_than_its_meter_admits() {
    use crate::access::ratelimit::{headers, Seen};
    use crate::bucket::credit::Holding;
    let mut rng = Lcg(23);
    let mut told = 0;
    for case in 0..24 {
        let (rpm, tpm) = (5 + rng.below(300), 1_000 + rng.below(50_000));
        let l = limits(Some(rpm), Some(tpm), None, None);
        let (mut m, mut held) = (Meter::default(), Holding::default());
        let mut now = T0;
        let busy = 1 + rng.below(500);
        for _ in 0..400 {
            now += rng.below(busy);
            let est = 1 + rng.below(200);
            let wants = Ask {
                est_tokens: est,
                ttl_ms: 60_000,
                credit_max: 16,
                max_wait_ms: 0,
            };
            let Some((lease, minute)) = admit_seen(&mut m, &mut held, now, &l, wants) else {
                continue;
            };
            let said = headers(&[Seen { limits: l, minute }], now);
            let value = |name: &str| {
                let found = said.iter().find(|(n, _)| *n == name);
                found.and_then(|(_, v)| v.parse::<u64>().ok()).unwrap()
            };
            let (requests, tokens) = (
                value("x-ratelimit-remaining-requests"),
                value("x-ratelimit-remaining-tokens"),
            );
            let what = format!("case {case} {l:?} at {}", now - T0);
            let admitted = room_left(&m, &held, now, &l, requests);
            assert_eq!(admitted, requests, "{what}: requests");
            if requests > 0 && tokens > 0 {
                let (mut m, mut held) = (m.clone(), held.clone());
                let big = admit_seen(&mut m, &mut held, now, &l, ask(tokens, 60_000));
                assert!(big.is_some(), "{what}: {tokens} tokens");
            }
            told += requests;
            // Answered: mostly below the estimate, some never sent.
            let spent = match rng.below(5) {
                0 => Spent {
                    tokens: None,
                    micro_usd: 0,
                    sent: false,
                },
                _ => served(rng.below(est + 1), 0),
            };
            m.settle(now, SPEC, lease, spent);
        }
    }
    assert!(told > 10_000, "room was told: {told}");
}

/// Through one isolate, with nothing leaving the minute, the room told falls by one for each
/// request, whether admitted by the meter or spent from a credit it handed out; all of it is
/// free a minute after the last admission (or credit) counted.
#[test]
fn the_room_told_falls_by_one_a_request_from_asks_and_credits_alike() {
    use crate::bucket::credit::{life_ms, Holding};
    let l = limits(Some(40), Some(100_000), None, None);
    let (mut m, mut held) = (Meter::default(), Holding::default());
    let mut credited = 0;
    for i in 0..40 {
        let now = T0 + i * 40;
        let wants = Ask {
            est_tokens: 100,
            ttl_ms: 60_000,
            credit_max: 8,
            max_wait_ms: 0,
        };
        credited += u64::from(held.clone().spend(now, 100).0.is_some());
        let (_, minute) = admit_seen(&mut m, &mut held, now, &l, wants).unwrap();
        assert_eq!(minute.used.requests, i + 1, "request {i}");
        // Tokens count the admissions of the credits held (at most two of 8) in full until
        // they end (`Holding::observe`).
        let tokens = minute.used.tokens / 100;
        assert!(
            (i + 1..=i + 1 + 16).contains(&tokens),
            "request {i}: {tokens}"
        );
        let clear = minute.requests_clear_ms - 60_000;
        assert!(
            (now..=now + life_ms(SPEC)).contains(&clear),
            "request {i}: clear {clear}"
        );
    }
    assert!(credited > 20, "most were spent from credits: {credited}");
}

#[test]
fn a_caller_is_told_its_own_limits_and_use_in_its_units() {
    let l = limits(Some(20), None, Some(1_000), Some(5_000_000));
    let mut m = Meter::default();
    let Verdict::Go { .. } = m.admit(T0, &l, SPEC, ask(100, 60_000)) else {
        panic!()
    };
    let view = m.view(T0 + 1, l, SPEC);
    let told = serde_json::to_value(CallerUsage::new("web", Some("alice"), Some(&view))).unwrap();
    assert_eq!(
        told,
        serde_json::json!({"object": "gateway.usage", "client": "web", "user": "alice",
            "limits": {"rpm": 20, "daily_tokens": 1000, "monthly_usd": 5.0},
            "minute_requests": 1, "minute_tokens": 100, "day_tokens": 100, "month_usd": 0.0})
    );
    let unmetered = serde_json::to_value(CallerUsage::new("web", None, None)).unwrap();
    assert_eq!(
        unmetered,
        serde_json::json!({"object": "gateway.usage", "client": "web", "user": null, "limits": {}})
    );
}
