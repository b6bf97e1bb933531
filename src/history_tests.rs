use super::*;

const LIMITS: Limits = Limits {
    rpm: Some(10),
    rps: None,
    tpm: None,
    tps: None,
};
/// 2026-11-30T00:00:00Z.
const T0: u64 = 1_795_996_800_000;

fn served(c: &Counters, n: u64) -> Counters {
    Counters {
        admitted: c.admitted + n,
        ok: c.ok + n,
        prompt_tokens: c.prompt_tokens + 10 * n,
        cached_tokens: c.cached_tokens + 4 * n,
        ..c.clone()
    }
}

fn used(requests: u64) -> Used {
    Used {
        requests,
        tokens: 10 * requests,
    }
}

#[test]
fn minutes_close_at_their_boundary_and_add_up_to_their_day() {
    let mut h = History::default();
    let mut c = Counters::default();
    // 3 requests in minute 0 (at 59.999 s the last), 2 in minute 1, then a call in minute 3.
    for (at, n, use_now) in [(0, 1, 1), (30_000, 1, 2), (59_999, 1, 3), (60_000, 2, 5)] {
        let next = served(&c, n);
        h.record(T0 + at, &LIMITS, (&c, &next), used(use_now));
        c = next;
    }
    assert!(
        h.take_closed().minutes.len() == 1,
        "minute 0 closed at 60.000 s"
    );
    h.record(T0 + 180_000, &LIMITS, (&c, &c), used(0));
    let closed = h.take_closed();
    let m = |i: usize| &closed.minutes[i].1;
    assert_eq!(closed.minutes.len(), 1);
    assert_eq!((m(0).ok, m(0).peak_rpm, m(0).prompt_tokens), (2, 5, 20));
    assert_eq!(m(0).cached_tokens, 8, "cached input is rolled up too");
    let (minute, day) = h.open();
    assert_eq!(minute.map(|(n, r)| (n, r.ok)), Some((T0 / 60_000 + 3, 0)));
    let (d, day) = day.unwrap();
    assert_eq!(d, T0 / 86_400_000);
    assert_eq!((day.ok, day.admitted, day.peak_rpm), (5, 5, 5));
}

#[test]
fn a_day_closes_at_utc_midnight_with_its_minutes() {
    let mut h = History::default();
    let c0 = Counters::default();
    let c1 = served(&c0, 4);
    h.record(T0 + 86_400_000 - 1, &LIMITS, (&c0, &c1), used(10));
    let c2 = served(&c1, 1);
    h.record(T0 + 86_400_000, &LIMITS, (&c1, &c2), used(1));
    let closed = h.take_closed();
    assert_eq!(closed.minutes.len(), 1);
    assert_eq!(
        closed.minutes[0].1.minutes_at_limit, 1,
        "10 of rpm 10 is at the limit"
    );
    assert_eq!(closed.days.len(), 1);
    let (day, rollup) = &closed.days[0];
    assert_eq!(
        (*day, rollup.ok, rollup.minutes_at_limit),
        (T0 / 86_400_000, 4, 1)
    );
    assert_eq!(h.open().1.map(|(_, r)| r.ok), Some(1));
    assert!(h.take_closed().minutes.is_empty(), "taken once");
}

#[test]
fn a_day_summary_takes_p95_over_every_minute_of_the_day() {
    let mut day = Rollup::default();
    let minutes = |n: usize, rpm: u64| -> Vec<Rollup> {
        (0..n)
            .map(|_| Rollup {
                peak_rpm: rpm,
                minutes_at_limit: u64::from(rpm >= 10),
                ..Rollup::default()
            })
            .collect()
    };
    // 50 busy minutes at 10 rpm (3.5 % of the day), the rest idle: p95 is 0.
    summarise_day(&mut day, &minutes(50, 10));
    assert_eq!((day.p95_rpm, day.minutes_at_limit), (0, 50));
    // 100 busy minutes (6.9 %): p95 is 10.
    summarise_day(&mut day, &minutes(100, 10));
    assert_eq!((day.p95_rpm, day.minutes_at_limit), (10, 100));
    // 50 at 10 and the rest at 4: p95 is 4.
    let mut all = minutes(50, 10);
    all.extend(minutes(1_390, 4));
    summarise_day(&mut day, &all);
    assert_eq!(day.p95_rpm, 4);
    let (first, end) = day_minutes(T0 / 86_400_000);
    assert_eq!((first * 60_000, end - first), (T0, 1_440));
    assert_eq!(horizon(T0), (T0 / 60_000 - 1_440, T0 / 86_400_000 - 90));
}

#[test]
fn the_stored_history_stays_small() {
    let mut h = History::default();
    let mut c = Counters::default();
    for i in 0..10_000u64 {
        let next = served(&c, 1);
        h.record(T0 + i * 997, &LIMITS, (&c, &next), used(i % 11));
        c = next;
        h.take_closed();
    }
    let size = serde_json::to_string(&h).unwrap().len();
    assert!(size < 1_000, "{size} bytes");
}
