//! Planner decisions, table by table: rotate, wait, retry, downgrade, give up (compiled only under #[cfg(test)]).

use super::*;
use crate::classify::LimitKind;

/// A candidate as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
struct Cand {
    account: String,
    upstream: String,
    priority: u32,
    weight: f64,
    cap: Option<u64>,
    keys: usize,
    known_free_at_ms: Option<u64>,
    unsupported: bool,
}

impl Choice for Cand {
    fn account(&self) -> &str {
        &self.account
    }
    fn upstream(&self) -> &str {
        &self.upstream
    }
    fn priority(&self) -> u32 {
        self.priority
    }
    fn weight(&self) -> f64 {
        self.weight
    }
    fn token_cap(&self) -> Option<u64> {
        self.cap
    }
    fn keys(&self) -> usize {
        self.keys
    }
    fn known_free_at_ms(&self) -> Option<u64> {
        self.known_free_at_ms
    }
    fn known_unsupported(&self) -> bool {
        self.unsupported
    }
}

fn cand(account: &str, upstream: &str) -> Cand {
    Cand {
        account: account.into(),
        upstream: upstream.into(),
        priority: 0,
        weight: 1.0,
        cap: None,
        keys: 1,
        known_free_at_ms: None,
        unsupported: false,
    }
}

fn chain() -> Vec<Step<Cand>> {
    vec![
        Step {
            model: "qwen3-max".into(),
            candidates: vec![cand("a", "sim"), cand("b", "sim")],
        },
        Step {
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
        cache_key: None,
        est_tokens: 100,
        prompt_tokens: 10,
        input_param: "messages",
    }
}

type P = Planner<Cand>;

fn go(lease: u64, at_ms: u64) -> Admission {
    Admission::Go {
        lease,
        at_ms,
        probe: false,
        late_ms: 0,
        credit: None,
    }
}

fn full(until: u64) -> Admission {
    Admission::Denied {
        until_ms: Some(until),
        reason: DenyReason::Full,
    }
}

/// The next action, which must be an Acquire: (slot, account, step model index, wait).
fn acquire(p: &mut P, now: u64) -> (Slot, String, u64) {
    match p.next(now) {
        Action::Acquire {
            slot,
            candidate,
            max_wait_ms,
        } => (slot, candidate.account, max_wait_ms),
        other => panic!("expected Acquire, got {other:?}"),
    }
}

#[test]
fn a_conversation_keeps_its_account_whatever_the_seed_and_others_spread() {
    let steps = || {
        vec![Step {
            model: "qwen3-max".into(),
            candidates: ["a", "b", "c", "d"].map(|a| cand(a, "sim")).to_vec(),
        }]
    };
    let first = |key: Option<u64>, seed: u64| {
        let settings = PlanSettings {
            seed,
            cache_key: key,
            ..settings()
        };
        acquire(&mut P::new("qwen3-max", steps(), settings), 0).1
    };
    let mut firsts = std::collections::BTreeSet::new();
    for key in 0..40u64 {
        let account = first(Some(key), 1);
        for seed in 2..12 {
            assert_eq!(first(Some(key), seed), account, "key {key}");
        }
        firsts.insert(account);
    }
    assert_eq!(firsts.len(), 4, "keys spread over every account");
    let unkeyed: std::collections::BTreeSet<_> = (0..40).map(|seed| first(None, seed)).collect();
    assert!(unkeyed.len() > 1, "without a key: random");
}

/// The next action, which must be a Send: (slot, account, lease, at).
fn send(p: &mut P, now: u64) -> (Slot, String, u64, u64) {
    match p.next(now) {
        Action::Send {
            slot,
            candidate,
            lease,
            at_ms,
        } => (slot, candidate.account, lease, at_ms),
        other => panic!("expected Send, got {other:?}"),
    }
}

fn give_up(p: &mut P, now: u64) -> ApiError {
    match p.next(now) {
        Action::GiveUp(e) => e,
        other => panic!("expected GiveUp, got {other:?}"),
    }
}

#[test]
fn common_case_is_one_round_trip_then_send() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, _, wait) = acquire(&mut p, 0);
    assert_eq!(
        (slot.step, wait),
        (0, 500),
        "first ask takes a slot within a quarter of the wait"
    );
    p.on_admission(slot, &go(1, 0));
    let (sent, _, lease, at) = send(&mut p, 0);
    assert_eq!((sent, lease, at), (slot, 1, 0));
    assert_eq!(p.fallback_reason(), None);
}

#[test]
fn a_step_with_no_account_is_passed_over_as_unavailable() {
    let mut chain = chain();
    chain[0].candidates.clear();
    let mut p = P::new("qwen3-max", chain, settings());
    let (slot, account, _) = acquire(&mut p, 0);
    assert_eq!((slot.step, account.as_str()), (1, "a"));
    assert_eq!(
        p.fallback_reason().as_deref(),
        Some("qwen3-max:unavailable")
    );
}

#[test]
fn rotates_to_the_other_account_when_the_first_is_full() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (first, a, _) = acquire(&mut p, 0);
    p.on_admission(first, &full(50_000));
    let (second, b, wait) = acquire(&mut p, 0);
    assert_ne!(a, b);
    assert_eq!(
        (second.step, wait),
        (0, 2_000),
        "the first frees too late to wait for: the last one is asked with the full wait"
    );
    p.on_admission(second, &go(2, 0));
    assert_eq!(send(&mut p, 0).2, 2);
}

#[test]
fn waits_for_the_earliest_slot_within_max_wait() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (a, _, _) = acquire(&mut p, 0);
    p.on_admission(a, &full(1_500));
    let (b, _, _) = acquire(&mut p, 0);
    p.on_admission(b, &full(900));
    let (again, _, wait) = acquire(&mut p, 0);
    assert_eq!(
        (again, wait),
        (b, 2_000),
        "the earliest bucket, asked with the full wait"
    );
    p.on_admission(b, &go(3, 900));
    assert_eq!(send(&mut p, 0).3, 900);
}

#[test]
fn downgrades_when_no_bucket_frees_in_time_and_says_why() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (a, _, _) = acquire(&mut p, 0);
    p.on_admission(a, &full(30_000));
    let (b, _, _) = acquire(&mut p, 0);
    p.on_admission(b, &full(40_000));
    let (plus, _, wait) = acquire(&mut p, 0);
    assert_eq!(plus.step, 1);
    assert_eq!(
        wait, 2_000,
        "single candidate: asked with the full wait at once"
    );
    assert_eq!(
        p.fallback_reason().as_deref(),
        Some("qwen3-max:no_capacity")
    );
}

#[test]
fn no_fallback_when_the_client_opts_out() {
    let mut s = settings();
    s.allow_fallback = false;
    let mut p = P::new("qwen3-max", chain(), s);
    for _ in 0..2 {
        let (slot, _, _) = acquire(&mut p, 0);
        p.on_admission(slot, &full(30_000));
    }
    let e = give_up(&mut p, 0);
    assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_exceeded"));
    assert_eq!(
        e.retry_after_s,
        Some(30),
        "honest: the earliest bucket frees at 30 s"
    );
    assert!(e.message.contains("qwen3-max") && !e.message.contains("qwen-plus"));
}

#[test]
fn gives_up_with_the_earliest_retry_after_across_the_chain() {
    let mut p = P::new("qwen3-max", chain(), settings());
    for until in [30_000, 40_000, 12_345] {
        let (slot, _, _) = acquire(&mut p, 1_000);
        p.on_admission(slot, &full(until));
    }
    let e = give_up(&mut p, 1_000);
    assert_eq!(e.retry_after_s, Some(12), "ceil((12345 - 1000) / 1000)");
    assert!(e.message.contains("qwen3-max, qwen-plus"), "{}", e.message);
    // What the isolate heard: those are passed over without a call.
    let mut steps = chain();
    for c in steps
        .iter_mut()
        .take(1)
        .flat_map(|s| s.candidates.iter_mut())
    {
        c.unsupported = true;
    }
    let mut p = P::new("qwen3-max", steps, settings());
    let (slot, _, _) = acquire(&mut p, 0);
    assert_eq!(slot.step, 1);
    assert_eq!(
        p.fallback_reason().as_deref(),
        Some("qwen3-max:unsupported")
    );
    let mut steps = chain();
    for c in steps.iter_mut().flat_map(|s| s.candidates.iter_mut()) {
        c.unsupported = true;
    }
    let mut p = P::new("qwen3-max", steps, settings());
    assert_eq!(give_up(&mut p, 0).status, 404);
    assert_eq!(p.attempts(), 0);
}

#[test]
fn rate_limit_429_rotates_without_retrying_the_same_account() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, a, _) = acquire(&mut p, 0);
    p.on_admission(slot, &go(1, 0));
    let _ = p.next(0);
    let limited = Outcome::Cooldown {
        kind: LimitKind::Requests,
        cooldown_ms: 60_000,
        hinted: false,
    };
    p.on_outcome(slot, &limited, 10);
    let (_, b, _) = acquire(&mut p, 10);
    assert_ne!(
        a, b,
        "never the same account (whatever its key) after its 429"
    );
    assert_eq!(p.attempts(), 1);
}

#[test]
fn short_cooldown_hint_is_waited_for() {
    let one = vec![Step {
        model: "gpt".into(),
        candidates: vec![cand("a", "openai")],
    }];
    let mut p = P::new("gpt", one, settings());
    let (slot, _, _) = acquire(&mut p, 0);
    p.on_admission(slot, &go(1, 0));
    let _ = p.next(0);
    let hinted = Outcome::Cooldown {
        kind: LimitKind::Requests,
        cooldown_ms: 644,
        hinted: false,
    };
    p.on_outcome(slot, &hinted, 0);
    let (again, _, wait) = acquire(&mut p, 0);
    assert_eq!(
        (again, wait),
        (slot, 2_000),
        "644 ms is within the wait: ask again with it"
    );
}

#[test]
fn server_errors_retry_with_bounded_jittered_backoff_then_rotate() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, a, _) = acquire(&mut p, 0);
    for round in 0..=MAX_RETRIES {
        p.on_admission(slot, &go(u64::from(round), 0));
        let _ = send(&mut p, 0);
        p.on_outcome(slot, &Outcome::Retry { after_ms: None }, 0);
        if round < MAX_RETRIES {
            match p.next(0) {
                Action::Backoff { ms } => assert!(ms <= BACKOFF_BASE_MS << round, "{ms}"),
                other => panic!("{other:?}"),
            }
            assert_eq!(acquire(&mut p, 0).0, slot, "retry the same bucket");
        }
    }
    let (_, b, _) = acquire(&mut p, 0);
    assert_ne!(a, b, "rotated after {MAX_RETRIES} retries");
    assert_eq!(p.attempts(), MAX_RETRIES + 1);
}

#[test]
fn backoff_never_outlasts_the_deadline() {
    let mut s = settings();
    s.deadline_ms = 1_100;
    let mut p = P::new("qwen3-max", chain(), s);
    let (slot, _, _) = acquire(&mut p, 0);
    p.on_admission(slot, &go(0, 0));
    let _ = send(&mut p, 0);
    p.on_outcome(
        slot,
        &Outcome::Retry {
            after_ms: Some(30_000),
        },
        1_000,
    );
    assert_eq!(p.next(1_000), Action::Backoff { ms: 100 });
}

#[test]
fn client_errors_end_at_once_without_downgrade() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, _, _) = acquire(&mut p, 0);
    p.on_admission(slot, &go(1, 0));
    let _ = p.next(0);
    let moderation =
        ApiError::invalid_request("Input data may contain inappropriate content.", None);
    p.on_outcome(slot, &Outcome::Client(moderation.clone()), 0);
    assert_eq!(give_up(&mut p, 0), moderation);
}

#[test]
fn an_endpoint_a_model_lacks_moves_on_without_parking_and_ends_404_when_none_has_it() {
    // qwen3-max lacks it at the upstream both its accounts use: one answer says so for both
    // (an endpoint's models are the upstream's); qwen-plus serves, and the header says why.
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, _, _) = acquire(&mut p, 0);
    p.on_admission(slot, &go(1, 0));
    let _ = send(&mut p, 0);
    p.on_outcome(slot, &Outcome::Unsupported, 0);
    let (slot, account, _) = acquire(&mut p, 0);
    assert_eq!((slot.step, account.as_str()), (1, "a"));
    p.on_admission(slot, &go(3, 0));
    let _ = send(&mut p, 0);
    p.on_outcome(slot, &Outcome::Success, 0);
    assert_eq!(
        p.fallback_reason().as_deref(),
        Some("qwen3-max:unsupported")
    );
    // Another upstream of the same step is still asked.
    let mut steps = chain();
    steps[0].candidates[1] = cand("r", "relay");
    let mut p = P::new("qwen3-max", steps, settings());
    let (slot, first, _) = acquire(&mut p, 0);
    p.on_admission(slot, &go(1, 0));
    let _ = send(&mut p, 0);
    p.on_outcome(slot, &Outcome::Unsupported, 0);
    let (slot, second, _) = acquire(&mut p, 0);
    assert_eq!(slot.step, 0);
    assert_ne!(first, second);
    // None has it: a 404 saying so, never retried, never a 429 or a park.
    let mut p = P::new("qwen3-max", chain(), settings());
    for lease in 1..=2 {
        let (slot, _, _) = acquire(&mut p, 0);
        p.on_admission(slot, &go(lease, 0));
        let _ = send(&mut p, 0);
        p.on_outcome(slot, &Outcome::Unsupported, 0);
    }
    let e = give_up(&mut p, 0);
    assert_eq!(
        (
            e.status,
            e.code.as_deref(),
            e.param.as_deref(),
            e.should_retry
        ),
        (404, Some("model_not_supported"), Some("model"), Some(false))
    );
    assert!(e.message.contains("qwen3-max, qwen-plus"), "{}", e.message);
}

#[test]
fn account_park_skips_that_account_in_every_step() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (first, parked, _) = acquire(&mut p, 0);
    p.on_admission(first, &go(1, 0));
    let _ = p.next(0);
    let arrears = Outcome::Park {
        scope: ParkScope::Account,
        reason: "Arrearage".into(),
        for_ms: None,
    };
    p.on_outcome(first, &arrears, 0);
    let (second, other, _) = acquire(&mut p, 0);
    assert_ne!(other, parked);
    p.on_admission(second, &full(90_000));
    match p.next(0) {
        // "a" is the only qwen-plus account: if it was the parked one, the chain ends here.
        Action::GiveUp(e) if parked == "a" => assert_eq!(e.retry_after_s, Some(90)),
        Action::Acquire { slot, .. } if parked == "b" => assert_eq!(slot.step, 1),
        other => panic!("parked {parked}: {other:?}"),
    }
}

#[test]
fn all_parked_gives_a_429_that_says_do_not_retry() {
    let one = vec![Step {
        model: "qwen3-max".into(),
        candidates: vec![cand("a", "sim")],
    }];
    let mut p = P::new("qwen3-max", one, settings());
    let (slot, _, _) = acquire(&mut p, 0);
    let parked = Admission::Denied {
        until_ms: None,
        reason: DenyReason::Parked("free quota".into()),
    };
    p.on_admission(slot, &parked);
    let e = give_up(&mut p, 0);
    assert_eq!(
        (e.status, e.retry_after_s, e.should_retry),
        (429, None, Some(false))
    );
    assert_eq!(e.code.as_deref(), Some("upstreams_parked"));
}

#[test]
fn known_busy_buckets_are_not_asked() {
    let mut steps = chain();
    steps[0].candidates[0].known_free_at_ms = Some(45_000);
    let mut p = P::new("qwen3-max", steps, settings());
    let (_, account, wait) = acquire(&mut p, 0);
    assert_eq!(account, "b", "a is known to be full until 45 s");
    assert_eq!(
        wait, 2_000,
        "b is the only one left worth asking: full wait"
    );
}

#[test]
fn deadline_and_attempt_cap_end_the_loop() {
    let mut s = settings();
    s.deadline_ms = 1_000;
    let mut p = P::new("qwen3-max", chain(), s);
    assert!(matches!(p.next(1_000), Action::GiveUp(_)));

    let one = vec![Step {
        model: "gpt".into(),
        candidates: vec![cand("a", "openai")],
    }];
    let mut p = P::new("gpt", one, settings());
    let mut sends = 0;
    for _ in 0..100 {
        match p.next(0) {
            Action::Acquire { slot, .. } => p.on_admission(slot, &go(sends, 0)),
            Action::Send { slot, .. } => {
                sends += 1;
                let limited = Outcome::Cooldown {
                    kind: LimitKind::Requests,
                    cooldown_ms: 10,
                    hinted: false,
                };
                p.on_outcome(slot, &limited, 0);
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
fn priority_and_weight_order_the_first_choice() {
    let mut steps = chain();
    steps[0].candidates[1].weight = 3.0;
    let firsts_b = (0..2_000u64)
        .filter(|seed| {
            let mut s = settings();
            s.seed = *seed * 7919 + 1;
            let mut p = P::new("qwen3-max", steps.clone(), s);
            acquire(&mut p, 0).1 == "b"
        })
        .count();
    assert!(
        (1_350..1_650).contains(&firsts_b),
        "b has 3/4 of first choices: {firsts_b}"
    );
    steps[0].candidates[0].priority = 1;
    steps[0].candidates[1].weight = 0.01;
    for seed in 0..50 {
        let mut s = settings();
        s.seed = seed;
        let mut p = P::new("qwen3-max", steps.clone(), s);
        assert_eq!(acquire(&mut p, 0).1, "b");
    }
}

/// One account with `keys` keys serving one model.
fn keyed(keys: usize) -> Vec<Step<Cand>> {
    let mut a = cand("a", "sim");
    a.keys = keys;
    vec![Step {
        model: "qwen3-max".into(),
        candidates: vec![a, cand("b", "sim")],
    }]
}

fn refused() -> Outcome {
    Outcome::KeyRefused {
        reason: "invalid_api_key".into(),
    }
}

#[test]
fn refused_keys_are_switched_under_the_same_lease_without_using_retries() {
    let mut s = settings();
    s.seed = 1;
    let mut p = P::new("qwen3-max", keyed(4), s.clone());
    let mut slot = acquire(&mut p, 0).0;
    // Make sure the first ask went to "a"; otherwise start over with another seed.
    while p.place(slot).map(|p| p.choice.account.as_str()) != Some("a") {
        s.seed += 1;
        p = P::new("qwen3-max", keyed(4), s.clone());
        slot = acquire(&mut p, 0).0;
    }
    p.on_admission(slot, &go(7, 0));
    let _ = send(&mut p, 0);
    for _ in 0..3 {
        p.on_outcome(slot, &refused(), 5);
        let (again, account, lease, at) = send(&mut p, 5);
        assert_eq!((again, account.as_str(), lease, at), (slot, "a", 7, 5));
    }
    assert_eq!(p.attempts(), 3, "three refused calls so far");
    assert!(!p.server_error, "a refused key is not a server error");
    // The fourth key is refused too: the account is out, the request rotates to b.
    p.on_outcome(slot, &refused(), 5);
    let (_, b, _) = acquire(&mut p, 5);
    assert_eq!(b, "b");
    assert!(
        p.parked.iter().any(|e| e.contains("every key refused")),
        "{:?}",
        p.parked
    );
}

#[test]
fn too_large_steps_are_skipped_with_a_reason_and_all_too_large_is_a_400() {
    let mut steps = chain();
    for c in &mut steps[0].candidates {
        c.cap = Some(50);
    }
    steps[1].candidates[0].cap = Some(1_000);
    let mut p = P::new("qwen3-max", steps.clone(), settings());
    let (slot, _, _) = acquire(&mut p, 0);
    assert_eq!(slot.step, 1, "no qwen3-max account can hold 100 tokens");
    assert_eq!(p.fallback_reason().as_deref(), Some("qwen3-max:too_large"));

    let mut s = settings();
    s.est_tokens = u64::MAX;
    let mut p = P::new("qwen3-max", steps, s);
    let e = give_up(&mut p, 0);
    assert_eq!(
        (e.status, e.code.as_deref()),
        (400, Some("request_too_large"))
    );
    assert!(
        e.message.contains("1000") && e.message.contains(&u64::MAX.to_string()),
        "{}",
        e.message
    );
}

#[test]
fn a_too_large_denial_rules_out_only_that_bucket() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, a, _) = acquire(&mut p, 0);
    p.on_admission(
        slot,
        &Admission::Denied {
            until_ms: None,
            reason: DenyReason::TooLarge,
        },
    );
    let (_, b, _) = acquire(&mut p, 0);
    assert_ne!(a, b);
}

#[test]
fn a_missed_slot_is_asked_for_again_then_the_bucket_is_left() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, a, _) = acquire(&mut p, 0);
    for round in 0..=MAX_MISSES {
        p.on_admission(slot, &go(u64::from(round), 0));
        let _ = send(&mut p, 0);
        p.on_missed(slot);
        let (next, account, _) = acquire(&mut p, 0);
        if round < MAX_MISSES {
            assert_eq!((next, account.as_str()), (slot, a.as_str()), "asked again");
        } else {
            assert_ne!(account, a, "after {MAX_MISSES} misses, another account");
        }
    }
    assert_eq!(p.attempts(), 0, "nothing was sent");
}

#[test]
fn a_wait_for_the_clients_limits_asks_the_same_bucket_again() {
    let mut p = P::new("qwen3-max", chain(), settings());
    let (slot, a, _) = acquire(&mut p, 0);
    for round in 0..=MAX_MISSES + 1 {
        p.on_admission(slot, &go(u64::from(round), 0));
        let _ = send(&mut p, 0);
        p.on_client_waited(slot);
        let (next, account, wait) = acquire(&mut p, 0);
        assert_eq!((next, account.as_str()), (slot, a.as_str()), "asked again");
        assert_eq!(wait, 2_000, "with the whole wait");
    }
    assert_eq!(p.attempts(), 0, "nothing was sent");
}

#[test]
fn unreachable_buckets_rotate_then_answer_503_with_retry_after() {
    let mut s = settings();
    s.allow_fallback = false;
    let mut p = P::new("qwen3-max", chain(), s);
    let (first, a, _) = acquire(&mut p, 0);
    p.on_bucket_unreachable(first);
    let (second, b, _) = acquire(&mut p, 0);
    assert_ne!(a, b, "the next account is tried");
    p.on_bucket_unreachable(second);
    let e = give_up(&mut p, 0);
    assert_eq!((e.status, e.retry_after_s), (503, Some(2)));
    for field in [&e.kind, e.code.as_ref().unwrap()] {
        assert!(!field.is_empty());
    }
}
