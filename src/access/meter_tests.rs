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
        match m.admit(t, &l, SPEC, 10, 60_000) {
            Verdict::Go { lease } => {
                admitted.push(t);
                m.settle(t, SPEC, lease, served(10, 0));
            }
            Verdict::Rate { until_ms } => {
                assert!(until_ms > t);
                // Room really returns then.
                let mut probe = m.clone();
                assert!(matches!(
                    probe.admit(until_ms, &l, SPEC, 10, 60_000),
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
    let Verdict::Go { lease } = m.admit(T0, &l, SPEC, 900, 60_000) else {
        panic!()
    };
    assert!(matches!(
        m.admit(T0, &l, SPEC, 200, 60_000),
        Verdict::Rate { .. }
    ));
    m.settle(T0 + 10, SPEC, lease, served(100, 0));
    assert!(matches!(
        m.admit(T0 + 10, &l, SPEC, 800, 60_000),
        Verdict::Go { .. }
    ));
    assert_eq!(m.admit(T0, &l, SPEC, 1_001, 60_000), Verdict::TooLarge);
}

#[test]
fn the_daily_cap_counts_requests_in_flight_and_ends_at_utc_midnight() {
    let l = limits(None, None, Some(1_000), None);
    let mut m = Meter::default();
    let Verdict::Go { lease } = m.admit(T0 + 5, &l, SPEC, 600, 600_000) else {
        panic!()
    };
    // In flight, the estimate counts: 600 + 600 > 1,000.
    let refused = m.admit(T0 + 6, &l, SPEC, 600, 600_000);
    assert_eq!(
        refused,
        Verdict::Budget {
            which: "daily_tokens".into(),
            until_ms: T0 + DAY_MS
        }
    );
    m.settle(T0 + 7, SPEC, lease, served(300, 0));
    assert!(matches!(
        m.admit(T0 + 8, &l, SPEC, 600, 600_000),
        Verdict::Go { .. }
    ));
    assert!(matches!(
        m.admit(T0 + 9, &l, SPEC, 200, 600_000),
        Verdict::Budget { .. }
    ));
    // A new day starts empty (the old day's reservations have expired by then).
    assert!(matches!(
        m.admit(T0 + DAY_MS, &l, SPEC, 900, 600_000),
        Verdict::Go { .. }
    ));
}

#[test]
fn the_monthly_spend_cap_admits_while_settled_spend_is_under_it() {
    let l = limits(None, None, None, Some(1_000_000));
    let mut m = Meter::default();
    for _ in 0..3 {
        let Verdict::Go { lease } = m.admit(T0, &l, SPEC, 10, 60_000) else {
            panic!()
        };
        m.settle(T0, SPEC, lease, served(10, 400_000));
    }
    let Verdict::Budget { which, until_ms } = m.admit(T0, &l, SPEC, 10, 60_000) else {
        panic!()
    };
    assert_eq!(which, "monthly_usd");
    assert_eq!(until_ms, T0 + DAY_MS); // 2026-12-01
    assert!(matches!(
        m.admit(T0 + DAY_MS, &l, SPEC, 10, 60_000),
        Verdict::Go { .. }
    ));
    let view = m.view(T0 + DAY_MS, l, SPEC);
    assert_eq!(view.month_usd, 0.0);
    assert_eq!(view.totals.micro_usd, 1_200_000);
}

#[test]
fn a_request_never_sent_gives_everything_back_and_settles_once() {
    let l = limits(Some(1), Some(100), Some(100), None);
    let mut m = Meter::default();
    let Verdict::Go { lease } = m.admit(T0, &l, SPEC, 100, 60_000) else {
        panic!()
    };
    let unsent = Spent {
        tokens: None,
        micro_usd: 0,
        sent: false,
    };
    m.settle(T0 + 1, SPEC, lease, unsent);
    m.settle(T0 + 1, SPEC, lease, served(100, 5));
    let Verdict::Go { .. } = m.admit(T0 + 2, &l, SPEC, 100, 60_000) else {
        panic!()
    };
    assert_eq!(m.view(T0 + 2, l, SPEC).totals.micro_usd, 0);
}

#[test]
fn reset_forgets_the_periods_but_keeps_requests_in_flight() {
    let l = limits(Some(2), None, Some(100), None);
    let mut m = Meter::default();
    let Verdict::Go { lease } = m.admit(T0, &l, SPEC, 60, 60_000) else {
        panic!()
    };
    let Verdict::Go { .. } = m.admit(T0, &l, SPEC, 40, 60_000) else {
        panic!()
    };
    assert!(matches!(
        m.admit(T0, &l, SPEC, 1, 60_000),
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
        if let Verdict::Go { lease } = m.admit(t, &l, SPEC, 20, 60_000) {
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
        limits,
        spec: SPEC,
        op,
    };
    let mut m = Meter::default();
    let admit = || MeterOp::Admit {
        est_tokens: 100,
        ttl_ms: 60_000,
    };
    let leases: Vec<u64> = (0..2)
        .map(|_| match m.apply(T0, &call(admit())) {
            MeterReply::Verdict(Verdict::Go { lease }) => lease,
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
        limits: one_a_minute,
        spec: SPEC,
        op,
    };
    let admit = || MeterOp::Admit {
        est_tokens: 100,
        ttl_ms: 60_000,
    };
    let MeterReply::Verdict(Verdict::Go { lease }) = m.apply(T0, &call(admit())) else {
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
