//! The bucket Durable Object's protocol: one call in, one reply out (enums, externally tagged:
//! serde's internally tagged form costs tens of KB of wasm), applied to
//! the pure `BucketState`, so the Durable Object itself only loads, stores and answers.

use crate::bucket::credit::Credit;
use crate::bucket::{
    AcquireRequest, Admission, BucketState, ParkOf, Policy, SettleOutcome, Snapshot,
};
use crate::history::Rollup;
use crate::pace::SlowStart;
use crate::window::{Limits, WindowSpec};
use serde::{Deserialize, Serialize};

/// One call to a bucket: which limits to judge by (the caller's config), and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The bucket's name (`account:model`), for logs.
    pub bucket: String,
    /// The account's limits for the model.
    pub limits: Limits,
    /// Window lengths (compressed in tests).
    pub spec: WindowSpec,
    /// How fast the send rate may grow (the upstream profile's), if at all.
    #[serde(default)]
    pub slow_start: Option<SlowStart>,
    /// Most admissions one credit may carry (config `admission_credits`).
    #[serde(default)]
    pub credit_max: u64,
    /// What to do.
    pub op: Op,
}

/// What a call asks the bucket to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Admit, schedule or deny a request.
    Acquire(AcquireRequest),
    /// A credit ahead, beside no request: the isolate's credit is nearly spent.
    Grant(AcquireRequest),
    /// A stream started on this lease: keep it in flight until settled.
    Commit {
        /// The lease.
        lease: u64,
    },
    /// How a lease ended, and the keys the upstream refused while it was held.
    Settle {
        /// The lease.
        lease: u64,
        /// How it ended.
        outcome: SettleOutcome,
        /// Secret names of keys refused during this lease.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        refused_keys: Vec<String>,
        /// How late the send reached the upstream relative to its slot (`pace::lag_ms`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lag_ms: Option<i64>,
    },
    /// Admissions of a credit never spent, given back.
    Return {
        /// Their leases.
        leases: Vec<u64>,
    },
    /// Park from outside: another bucket of the account learned the account is parked.
    Park {
        /// Why.
        reason: String,
        /// How long; None = until cleared.
        for_ms: Option<u64>,
    },
    /// Several calls applied in order, answered with the last one's reply: settles, commits
    /// and returns nothing waits for, perhaps ahead of a call that is waited for (`Grant`).
    Batch(Vec<Op>),
    /// Operator action: lift a park, a cooldown and the refused keys.
    Clear,
    /// The live view.
    Snapshot,
    /// The history since minute number `minutes_from` (and every day kept): the open minute
    /// and day here; the object adds the stored ones.
    History {
        /// The first minute wanted (minutes since the epoch).
        minutes_from: u64,
    },
    /// The gateway answered a client 429 for want of capacity here (counted for operators).
    PassedOn,
    /// The gateway answered a client 500 here: no account of its model has a key set
    /// (`secrets`: the ones to set). Told to operators.
    NoKeySet {
        /// Secret names.
        secrets: Vec<String>,
    },
    /// A request meant for this bucket's model was served by a lower one: what that saved
    /// (or, negative, cost more) against this model's price for the same usage.
    Downgraded {
        /// Millionths of a USD; None when a price is missing.
        saved_micro_usd: Option<i64>,
    },
}

/// The bucket's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// To `Acquire`.
    Admission {
        /// The decision.
        admission: Admission,
        /// When denied: the earliest start of any request, a fact about the bucket that the
        /// caller may cache (the denial itself may be about this request's size).
        #[serde(default)]
        bucket_free_at_ms: Option<u64>,
        /// Secret names of the account's keys this bucket has seen refused.
        #[serde(default)]
        refused_keys: Vec<String>,
        /// Share of room left in its windows after this admission (`BucketState::headroom`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        headroom: Option<f64>,
    },
    /// To `Grant`: the credit, if the bucket has ample room.
    Granted {
        /// The credit.
        credit: Option<Credit>,
        /// Secret names of the account's keys this bucket has seen refused.
        #[serde(default)]
        refused_keys: Vec<String>,
    },
    /// To `Clear` and `Snapshot`.
    State {
        /// The live view.
        state: Snapshot,
        /// Secret names of refused keys.
        #[serde(default)]
        refused_keys: Vec<String>,
    },
    /// To `History`: (minute number, rollup) and (day number, rollup), oldest first.
    History {
        /// Minutes (the last 24 hours).
        minutes: Vec<(u64, Rollup)>,
        /// Days (the last 90).
        days: Vec<(u64, Rollup)>,
    },
    /// To `Commit`, `Settle` and `Park`.
    Done,
}

/// Applies one call at `now_ms`.
pub fn apply(state: &mut BucketState, now_ms: u64, call: &Call) -> Reply {
    let policy = Policy {
        limits: &call.limits,
        spec: call.spec,
        slow_start: call.slow_start,
        credit_max: call.credit_max,
    };
    if matches!(call.op, Op::Snapshot | Op::History { .. }) {
        // Reads record nothing, so they change nothing.
        return apply_op(state, now_ms, &policy, &call.op, false);
    }
    let before = state.counters().clone();
    let reply = apply_op(state, now_ms, &policy, &call.op, false);
    state.record_history(now_ms, &policy, &before);
    reply
}

/// Applies one op; `housekept`: the batch it is in did the housekeeping for this instant.
fn apply_op(
    state: &mut BucketState,
    now_ms: u64,
    policy: &Policy,
    op: &Op,
    housekept: bool,
) -> Reply {
    match op {
        Op::Acquire(ask) => {
            let admission = state.acquire(now_ms, policy, ask);
            let bucket_free_at_ms = match admission {
                Admission::Go { .. } => None,
                Admission::Denied { .. } => state.free_at(now_ms, policy),
            };
            Reply::Admission {
                admission,
                bucket_free_at_ms,
                refused_keys: state.refused_keys(),
                headroom: Some(state.headroom(now_ms, policy)),
            }
        }
        Op::Grant(ask) => Reply::Granted {
            credit: state.grant_ahead(now_ms, policy, ask),
            refused_keys: state.refused_keys(),
        },
        Op::Commit { lease } => {
            state.commit(now_ms, *lease);
            Reply::Done
        }
        Op::Settle {
            lease,
            outcome,
            refused_keys,
            lag_ms,
        } => {
            state.refuse_keys(refused_keys);
            if let Some(lag) = lag_ms {
                state.record_lag(*lag);
            }
            match housekept {
                true => state.end(now_ms, policy, *lease, outcome),
                false => state.settle(now_ms, policy, *lease, outcome),
            }
            Reply::Done
        }
        Op::Return { leases } => {
            state.give_back(now_ms, policy, leases);
            Reply::Done
        }
        Op::Batch(ops) => {
            // A batch of settles costs one housekeeping pass over the windows, not one each.
            state.housekeeping(now_ms, policy);
            ops.iter().fold(Reply::Done, |_, op| {
                apply_op(state, now_ms, policy, op, true)
            })
        }
        Op::Park { reason, for_ms } => {
            state.park(now_ms, reason, *for_ms, ParkOf::AccountHeard);
            Reply::Done
        }
        Op::Clear => {
            state.clear(now_ms);
            view(state, now_ms, policy)
        }
        Op::Snapshot => view(state, now_ms, policy),
        Op::PassedOn => {
            state.passed_on(now_ms, policy.spec.minute_ms.saturating_mul(60));
            Reply::Done
        }
        Op::NoKeySet { secrets } => {
            state.no_key_set(now_ms, policy.spec.minute_ms.saturating_mul(60), secrets);
            Reply::Done
        }
        Op::Downgraded { saved_micro_usd } => {
            state.downgraded(*saved_micro_usd);
            Reply::Done
        }
        Op::History { .. } => {
            let (minute, day) = state.history().open();
            Reply::History {
                minutes: minute.into_iter().collect(),
                days: day.into_iter().collect(),
            }
        }
    }
}

fn view(state: &BucketState, now_ms: u64, policy: &Policy) -> Reply {
    Reply::State {
        state: state.snapshot(now_ms, policy),
        refused_keys: state.refused_keys(),
    }
}

/// The state as it is stored, when it differs from what was stored last (None: no write).
pub fn changed<T: Serialize>(state: &T, stored: &str) -> Option<String> {
    serde_json::to_string(state)
        .ok()
        .filter(|json| json != stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::DenyReason;

    fn call(op: Op) -> Call {
        Call {
            bucket: "acct-a:qwen3-max".into(),
            limits: Limits {
                rpm: Some(1),
                tpm: Some(100),
                ..Limits::default()
            },
            spec: WindowSpec::default(),
            credit_max: 0,
            slow_start: None,
            op,
        }
    }

    fn acquire(tokens: u64) -> Call {
        call(Op::Acquire(AcquireRequest {
            est_tokens: tokens,
            max_wait_ms: 0,
            lease_ttl_ms: 60_000,
            credit: false,
            missed_lag_ms: None,
        }))
    }

    #[test]
    fn a_denial_carries_the_bucket_fact_not_the_request_fact() {
        let mut state = BucketState::default();
        let Reply::Admission {
            admission,
            bucket_free_at_ms,
            ..
        } = apply(&mut state, 0, &acquire(101))
        else {
            panic!("not an admission");
        };
        assert_eq!(
            admission,
            Admission::Denied {
                until_ms: None,
                reason: DenyReason::TooLarge
            }
        );
        assert_eq!(bucket_free_at_ms, Some(0), "the bucket itself is free now");
        let Reply::Admission {
            admission: Admission::Go { .. },
            bucket_free_at_ms: None,
            ..
        } = apply(&mut state, 0, &acquire(10))
        else {
            panic!("a small request goes");
        };
        let Reply::Admission {
            bucket_free_at_ms, ..
        } = apply(&mut state, 1, &acquire(10))
        else {
            panic!("not an admission");
        };
        // A new bucket widens its windows by 100 ms until its sends are measured.
        assert_eq!(
            bucket_free_at_ms,
            Some(60_100),
            "full for everyone until then"
        );
    }

    #[test]
    fn refused_keys_merge_and_clear() {
        let mut state = BucketState::default();
        let Reply::Admission { admission, .. } = apply(&mut state, 0, &acquire(1)) else {
            panic!()
        };
        let Admission::Go { lease, .. } = admission else {
            panic!()
        };
        let settle = Op::Settle {
            lease,
            outcome: SettleOutcome::Released,
            refused_keys: vec!["K2".into(), "K1".into()],
            lag_ms: Some(3),
        };
        assert_eq!(apply(&mut state, 1, &call(settle)), Reply::Done);
        let Reply::Admission { refused_keys, .. } = apply(&mut state, 2, &acquire(1)) else {
            panic!()
        };
        assert_eq!(refused_keys, ["K1", "K2"]);
        let Reply::State { refused_keys, .. } = apply(&mut state, 3, &call(Op::Clear)) else {
            panic!()
        };
        assert!(refused_keys.is_empty());
    }

    #[test]
    fn writes_only_when_the_state_changed() {
        let mut state = BucketState::default();
        let first = changed(&state, "").unwrap();
        assert_eq!(changed(&state, &first), None);
        apply(&mut state, 0, &call(Op::Snapshot));
        assert_eq!(changed(&state, &first), None, "a read changes nothing");
        apply(&mut state, 0, &acquire(1));
        assert!(changed(&state, &first).is_some());
    }

    #[test]
    fn calls_and_replies_have_a_stable_wire_form() {
        let json = serde_json::to_value(call(Op::Commit { lease: 4 })).unwrap();
        assert_eq!(json["op"], serde_json::json!({"commit": {"lease": 4}}));
        let settle = call(Op::Settle {
            lease: 1,
            outcome: SettleOutcome::Cancelled,
            refused_keys: vec![],
            lag_ms: None,
        });
        let text = serde_json::to_string(&settle).unwrap();
        assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), settle);
        assert_eq!(
            serde_json::to_value(Reply::Done).unwrap(),
            serde_json::json!("done")
        );
    }

    #[test]
    fn a_batch_applies_its_calls_in_order() {
        let go = |state: &mut BucketState, at: u64| match apply(state, at, &acquire(10)) {
            Reply::Admission {
                admission: Admission::Go { lease, .. },
                ..
            } => lease,
            other => panic!("{other:?}"),
        };
        let (mut one_by_one, mut batched) = (BucketState::default(), BucketState::default());
        let leases = [go(&mut one_by_one, 0), go(&mut batched, 0)];
        let settle = |lease| Op::Settle {
            lease,
            outcome: SettleOutcome::Released,
            refused_keys: vec!["K1".into()],
            lag_ms: Some(2),
        };
        apply(&mut one_by_one, 5, &call(Op::Commit { lease: leases[0] }));
        apply(&mut one_by_one, 5, &call(settle(leases[0])));
        let batch = Op::Batch(vec![Op::Commit { lease: leases[1] }, settle(leases[1])]);
        let json = serde_json::to_string(&call(batch)).unwrap_or_default();
        let back: Call = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(apply(&mut batched, 5, &back), Reply::Done);
        assert_eq!(batched, one_by_one);
        assert_eq!(batched.refused_keys(), ["K1"]);
    }

    #[test]
    fn a_batch_answers_with_its_last_calls_reply() {
        let mut state = BucketState::default();
        let lease = match apply(&mut state, 0, &acquire(10)) {
            Reply::Admission {
                admission: Admission::Go { lease, .. },
                ..
            } => lease,
            other => panic!("{other:?}"),
        };
        let settle = Op::Settle {
            lease,
            outcome: SettleOutcome::Released,
            refused_keys: vec![],
            lag_ms: None,
        };
        let Op::Acquire(ask) = acquire(10).op else {
            panic!("acquire builds an Acquire")
        };
        let batch = call(Op::Batch(vec![settle, Op::Acquire(ask)]));
        match apply(&mut state, 5, &batch) {
            Reply::Admission {
                admission: Admission::Go { .. },
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        match apply(&mut state, 5, &call(Op::Snapshot)) {
            Reply::State { state, .. } => assert_eq!(state.in_flight, 1, "the settle went first"),
            other => panic!("{other:?}"),
        }
    }
}
