//! Planner decisions, table by table: rotate, wait, retry, downgrade, give up (compiled only under #[cfg(test)]).

use super::*;
use crate::classify::LimitKind;

fn cand(account: &str, upstream: &str) -> PlanCandidate {
    PlanCandidate {
        account: account.into(),
        upstream: upstream.into(),
        priority: 0,
        weight: 1.0,
        known_free_at_ms: None,
    }
}

fn chain() -> Vec<PlanStep> {
    vec![
        PlanStep {
            model: "qwen3-max".into(),
            candidates: vec![cand("a", "sim"), cand("b", "sim")],
        },
        PlanStep {
            model: "qwen-plus".into(),
            candidates: vec![cand("a", "sim")],
        },
    ]
}

fn settings() -> PlanSettings {
    PlanSettings {
        max_wait_ms: 2_000,
        deadline_ms: 60_000,
        allow_fallback: true,
        seed: 7,
    }
}

fn go(lease: u64, at_ms: u64) -> Admission {
    Admission::Go {
        lease,
        at_ms,
        probe: false,
    }
}

fn full(until: u64) -> Admission {
    Admission::Denied {
        until_ms: Some(until),
        reason: DenyReason::Full,
    }
}

fn acquire(p: &mut Planner, now: u64) -> (Target, u64) {
    match p.next(now) {
        Action::Acquire {
            target,
            max_wait_ms,
        } => (target, max_wait_ms),
        other => panic!("expected Acquire, got {other:?}"),
    }
}

fn account(p: &Planner, t: Target) -> String {
    p.candidate(t).unwrap().account.clone()
}

#[test]
fn common_case_is_one_round_trip_then_send() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (t, wait) = acquire(&mut p, 0);
    assert_eq!(
        (t.step, wait),
        (0, 0),
        "first probe asks for a free slot now"
    );
    p.on_admission(t, &go(1, 0), 0);
    assert_eq!(
        p.next(0),
        Action::Send {
            target: t,
            lease: 1,
            at_ms: 0
        }
    );
    assert_eq!(p.fallback_reason(), None);
}

#[test]
fn rotates_to_the_other_account_when_the_first_is_full() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (first, _) = acquire(&mut p, 0);
    p.on_admission(first, &full(50_000), 0);
    let (second, wait) = acquire(&mut p, 0);
    assert_ne!(account(&p, first), account(&p, second));
    assert_eq!(
        (second.step, wait),
        (0, 2_000),
        "the first frees too late to wait for: the last one is asked with the full wait"
    );
    p.on_admission(second, &go(2, 0), 0);
    assert!(matches!(p.next(0), Action::Send { lease: 2, .. }));
}

#[test]
fn waits_for_the_earliest_slot_within_max_wait() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (a, _) = acquire(&mut p, 0);
    p.on_admission(a, &full(1_500), 0);
    let (b, _) = acquire(&mut p, 0);
    p.on_admission(b, &full(900), 0);
    let (again, wait) = acquire(&mut p, 0);
    assert_eq!(
        (again, wait),
        (b, 2_000),
        "the earliest bucket, asked with the full wait"
    );
    p.on_admission(b, &go(3, 900), 0);
    assert_eq!(
        p.next(0),
        Action::Send {
            target: b,
            lease: 3,
            at_ms: 900
        }
    );
}

#[test]
fn downgrades_when_no_bucket_frees_in_time_and_says_why() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (a, _) = acquire(&mut p, 0);
    p.on_admission(a, &full(30_000), 0);
    let (b, _) = acquire(&mut p, 0);
    p.on_admission(b, &full(40_000), 0);
    let (plus, wait) = acquire(&mut p, 0);
    assert_eq!(plus.step, 1);
    assert_eq!(
        wait, 2_000,
        "single candidate: asked with the full wait at once"
    );
    assert_eq!(p.model(plus), Some("qwen-plus"));
    assert_eq!(
        p.fallback_reason().as_deref(),
        Some("qwen3-max:no_capacity")
    );
}

#[test]
fn no_fallback_when_the_client_opts_out() {
    let mut s = settings();
    s.allow_fallback = false;
    let mut p = Planner::new("qwen3-max", chain(), s);
    for _ in 0..2 {
        let (t, _) = acquire(&mut p, 0);
        p.on_admission(t, &full(30_000), 0);
    }
    match p.next(0) {
        Action::GiveUp(e) => {
            assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_exceeded"));
            assert_eq!(
                e.retry_after_s,
                Some(30),
                "honest: the earliest bucket frees at 30 s"
            );
            assert!(e.message.contains("qwen3-max") && !e.message.contains("qwen-plus"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn gives_up_with_the_earliest_retry_after_across_the_chain() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    for until in [30_000, 40_000, 12_345] {
        let (t, _) = acquire(&mut p, 1_000);
        p.on_admission(t, &full(until), 1_000);
    }
    match p.next(1_000) {
        Action::GiveUp(e) => {
            assert_eq!(e.retry_after_s, Some(12), "ceil((12345 - 1000) / 1000)");
            assert!(e.message.contains("qwen3-max, qwen-plus"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rate_limit_429_rotates_without_retrying_the_same_account() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (a, _) = acquire(&mut p, 0);
    p.on_admission(a, &go(1, 0), 0);
    let _ = p.next(0);
    p.on_outcome(
        a,
        &Outcome::Cooldown {
            kind: LimitKind::Requests,
            cooldown_ms: 60_000,
        },
        10,
    );
    let (b, _) = acquire(&mut p, 10);
    assert_ne!(
        account(&p, a),
        account(&p, b),
        "never the same account (whatever its key) after its 429"
    );
    assert_eq!(p.attempts(), 1);
}

#[test]
fn short_cooldown_hint_is_waited_for() {
    let one = vec![PlanStep {
        model: "gpt".into(),
        candidates: vec![cand("a", "openai")],
    }];
    let mut p = Planner::new("gpt", one, settings());
    let (a, _) = acquire(&mut p, 0);
    p.on_admission(a, &go(1, 0), 0);
    let _ = p.next(0);
    p.on_outcome(
        a,
        &Outcome::Cooldown {
            kind: LimitKind::Requests,
            cooldown_ms: 644,
        },
        0,
    );
    assert_eq!(
        acquire(&mut p, 0),
        (a, 2_000),
        "644 ms is within the wait: ask again with it"
    );
}

#[test]
fn server_errors_retry_with_bounded_jittered_backoff_then_rotate() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (a, _) = acquire(&mut p, 0);
    for round in 0..=MAX_RETRIES {
        p.on_admission(a, &go(round as u64, 0), 0);
        assert!(matches!(p.next(0), Action::Send { .. }));
        p.on_outcome(a, &Outcome::Retry { after_ms: None }, 0);
        if round < MAX_RETRIES {
            match p.next(0) {
                Action::Backoff { ms } => assert!(ms <= BACKOFF_BASE_MS << round, "{ms}"),
                other => panic!("{other:?}"),
            }
            assert_eq!(acquire(&mut p, 0).0, a, "retry the same bucket");
        }
    }
    let (b, _) = acquire(&mut p, 0);
    assert_ne!(
        account(&p, a),
        account(&p, b),
        "rotated after {MAX_RETRIES} retries"
    );
    assert_eq!(p.attempts(), MAX_RETRIES + 1);
}

#[test]
fn client_errors_end_at_once_without_downgrade() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (a, _) = acquire(&mut p, 0);
    p.on_admission(a, &go(1, 0), 0);
    let _ = p.next(0);
    let moderation =
        ApiError::invalid_request("Input data may contain inappropriate content.", None);
    p.on_outcome(a, &Outcome::Client(moderation.clone()), 0);
    assert_eq!(p.next(0), Action::GiveUp(moderation));
}

#[test]
fn account_park_skips_that_account_in_every_step() {
    let mut p = Planner::new("qwen3-max", chain(), settings());
    let (first, _) = acquire(&mut p, 0);
    let parked = account(&p, first);
    p.on_admission(first, &go(1, 0), 0);
    let _ = p.next(0);
    p.on_outcome(
        first,
        &Outcome::Park {
            scope: ParkScope::Account,
            reason: "Arrearage".into(),
            for_ms: None,
        },
        0,
    );
    let (second, _) = acquire(&mut p, 0);
    assert_ne!(account(&p, second), parked);
    p.on_admission(second, &full(90_000), 0);
    match p.next(0) {
        // acct "a" is the only qwen-plus account: if it was the parked one, the chain ends here.
        Action::GiveUp(e) if parked == "a" => assert_eq!(e.retry_after_s, Some(90)),
        Action::Acquire { target, .. } if parked == "b" => assert_eq!(target.step, 1),
        other => panic!("parked {parked}: {other:?}"),
    }
}

#[test]
fn all_parked_gives_a_429_that_says_do_not_retry() {
    let one = vec![PlanStep {
        model: "qwen3-max".into(),
        candidates: vec![cand("a", "sim")],
    }];
    let mut p = Planner::new("qwen3-max", one, settings());
    let (a, _) = acquire(&mut p, 0);
    p.on_admission(
        a,
        &Admission::Denied {
            until_ms: None,
            reason: DenyReason::Parked("free quota".into()),
        },
        0,
    );
    match p.next(0) {
        Action::GiveUp(e) => {
            assert_eq!(
                (e.status, e.retry_after_s, e.should_retry),
                (429, None, Some(false))
            );
            assert_eq!(e.code.as_deref(), Some("upstreams_parked"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn known_busy_buckets_are_not_probed() {
    let mut steps = chain();
    steps[0].candidates[0].known_free_at_ms = Some(45_000);
    let mut p = Planner::new("qwen3-max", steps, settings());
    let (t, wait) = acquire(&mut p, 0);
    assert_eq!(account(&p, t), "b", "a is known to be full until 45 s");
    assert_eq!(
        wait, 2_000,
        "b is the only one left worth asking: full wait"
    );
}

#[test]
fn deadline_and_attempt_cap_end_the_loop() {
    let mut s = settings();
    s.deadline_ms = 1_000;
    let mut p = Planner::new("qwen3-max", chain(), s);
    assert!(matches!(p.next(1_000), Action::GiveUp(_)));

    let one = vec![PlanStep {
        model: "gpt".into(),
        candidates: vec![cand("a", "openai")],
    }];
    let mut p = Planner::new("gpt", one, settings());
    let mut sends = 0;
    for _ in 0..100 {
        match p.next(0) {
            Action::Acquire { target, .. } => p.on_admission(target, &go(sends, 0), 0),
            Action::Send { target, .. } => {
                sends += 1;
                p.on_outcome(
                    target,
                    &Outcome::Cooldown {
                        kind: LimitKind::Requests,
                        cooldown_ms: 10,
                    },
                    0,
                );
            }
            Action::Backoff { .. } => {}
            Action::GiveUp(e) => {
                assert_eq!(e.status, 429);
                break;
            }
        }
    }
    assert_eq!(sends, u64::from(MAX_ATTEMPTS));
}

#[test]
fn weights_spread_first_choices() {
    let mut steps = chain();
    steps[0].candidates[1].weight = 3.0;
    let firsts_b = (0..2_000u64)
        .filter(|seed| {
            let mut s = settings();
            s.seed = *seed * 7919 + 1;
            let mut p = Planner::new("qwen3-max", steps.clone(), s);
            let (t, _) = acquire(&mut p, 0);
            account(&p, t) == "b"
        })
        .count();
    assert!(
        (1_350..1_650).contains(&firsts_b),
        "b has 3/4 of first choices: {firsts_b}"
    );
}

#[test]
fn priority_beats_weight() {
    let mut steps = chain();
    steps[0].candidates[0].priority = 1;
    steps[0].candidates[1].weight = 0.01;
    for seed in 0..50 {
        let mut s = settings();
        s.seed = seed;
        let mut p = Planner::new("qwen3-max", steps.clone(), s);
        let (t, _) = acquire(&mut p, 0);
        assert_eq!(account(&p, t), "b");
    }
}
