//! The state machine one Durable Object holds for one (account, model) budget: admit, schedule, refuse, settle.
//!
//! Pure: time comes in as `now_ms`. Every lease is settled at most once; a lease keeps its
//! record until settled, so a late settle (a long stream) still lands its real usage.

use crate::history::{Closed, History};
use crate::pace::{self, Pace, SlowStart};
use crate::window::{caps, Limits, Used, WindowSpec, Windows};
use credit::Credit;
use lease::Lease;
use park::{Gate, Park};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub mod credit;
pub(crate) mod lease;
mod outcome;
mod park;

pub use outcome::busy_until;
pub use park::ParkOf;

/// How long an unsettled lease counts as in flight after its request's deadline.
pub const LEASE_GRACE_MS: u64 = 60_000;
/// A committed stream's lease lives until settled; after this long unsettled (its worker
/// must have died) its record is dropped.
pub const COMMITTED_LEASE_MS: u64 = 24 * 3_600_000;

/// Limits, window lengths and pacing the bucket is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The bucket's configured limits.
    pub limits: &'a Limits,
    /// Window lengths (compressed in tests).
    pub spec: WindowSpec,
    /// How fast its send rate may grow (the upstream profile's), if at all.
    pub slow_start: Option<SlowStart>,
    /// Most admissions one credit may carry (0: none, every admission is asked for).
    pub credit_max: u64,
}

/// What a caller asks of the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// Estimated tokens (prompt + max completion) reserved until settled.
    pub est_tokens: u64,
    /// Longest the caller will wait for a scheduled slot.
    pub max_wait_ms: u64,
    /// Drop the lease from in-flight when unsettled this long after its start.
    pub lease_ttl_ms: u64,
    /// The asker holds no credit of this bucket and would take one.
    #[serde(default)]
    pub credit: bool,
    /// How late the asker's last send for this request would have left the slot it gives back
    /// (ms): recorded before the new slot is chosen, so its allowance covers that lateness. The
    /// give-back's settle carries it too, but races this ask, and a busy isolate that misses
    /// slot after slot gives the request up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_lag_ms: Option<i64>,
}

/// The bucket's answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Send at `at_ms` (== now: go now; > now: a scheduled slot within max_wait). The slot is reserved.
    Go {
        /// Lease id to settle afterwards.
        lease: u64,
        /// When to send.
        at_ms: u64,
        /// This request is the one half-open probe of an expired park.
        probe: bool,
        /// How late the send may leave and still fit the windows (their widening, in ms): a
        /// send later than that gives its slot back and asks again.
        #[serde(default)]
        late_ms: u64,
        /// Further admissions handed out ahead, while the bucket has ample room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<Credit>,
    },
    /// Not within max_wait. `until_ms`: earliest time a request of this size could start (None = parked until an operator clears it, or never fits).
    Denied {
        /// Earliest possible start, if any.
        until_ms: Option<u64>,
        /// Why.
        reason: DenyReason,
    },
}

impl DenyReason {
    /// A short name for logs.
    pub fn label(&self) -> &'static str {
        match self {
            DenyReason::Full => "denied_full",
            DenyReason::Cooling => "denied_cooling",
            DenyReason::Parked(_) => "denied_parked",
            DenyReason::ProbeInFlight => "denied_probe_in_flight",
            DenyReason::TooLarge => "denied_too_large",
        }
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The windows have no slot within max_wait.
    Full,
    /// Cooling down after a 429 beyond max_wait.
    Cooling,
    /// Parked after a hard failure, with its reason.
    Parked(String),
    /// The park expired and its one probe is still out.
    ProbeInFlight,
    /// The request alone exceeds TPS or TPM.
    TooLarge,
}

/// How a leased request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleOutcome {
    /// Served: `prompt_tokens`/`completion_tokens` from the upstream's usage (None = unknown, keep the estimate).
    Ok {
        /// Upstream prompt tokens, if reported.
        prompt_tokens: Option<u64>,
        /// Upstream completion tokens, if reported.
        completion_tokens: Option<u64>,
        /// Of the prompt, what the upstream read from its prompt cache.
        #[serde(default)]
        cached_tokens: u64,
        /// What the request cost, in millionths of a USD (0 when no price is configured).
        #[serde(default)]
        cost_micro_usd: u64,
    },
    /// Never sent (client went away, deadline, chose another bucket): free the reservation.
    Released,
    /// Sent, then the client left and the call was cancelled: it counted upstream, so it keeps
    /// its slot and its token estimate.
    Cancelled,
    /// Sent but failed without a limit signal (5xx, network): keeps its request slot, tokens -> 0.
    Failed,
    /// Upstream 429 for a window limit: the request did not count upstream (release it); cool until now + ms.
    Cooldown {
        /// Cooldown length.
        ms: u64,
        /// Which limit (`requests` and `tokens` are window limits; for the record otherwise).
        kind: String,
        /// The upstream said how long; otherwise `ms` is a whole window, which the bucket
        /// skips for the first such 429 in a minute (jitter, not an exhausted minute),
        /// widening its windows instead.
        #[serde(default)]
        hinted: bool,
    },
    /// Upstream surge protection: release; hold the rate at what was working, then ramp back
    /// with a gentler growth (`pace`).
    Burst,
    /// Hard failure: park with reason, `for_ms` None = until cleared by an operator.
    Park {
        /// Why (shown to operators and callers).
        reason: String,
        /// Park length; None = until cleared.
        for_ms: Option<u64>,
        /// The whole account's (its other buckets are parked too, by `Op::Park`).
        #[serde(default)]
        account: bool,
    },
}

/// Running totals for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Requests given a slot (now or scheduled).
    pub admitted: u64,
    /// Of those, slots in the future.
    pub scheduled: u64,
    /// Requests refused.
    pub denied: u64,
    /// Settled as served.
    pub ok: u64,
    /// Settled as failed without a limit signal.
    pub failed: u64,
    /// Slots given back unused (another bucket chosen, or the client left before sending).
    pub released: u64,
    /// Sent, then cancelled because the client left.
    pub cancelled: u64,
    /// Window-limit 429s.
    pub rate_limited: u64,
    /// Of those, for a token limit (TPM, TPS).
    pub rate_limited_tokens: u64,
    /// Burst-protection 429s.
    pub burst: u64,
    /// Times parked.
    pub parked: u64,
    /// Prompt tokens reported by the upstream.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the upstream.
    pub completion_tokens: u64,
    /// Of the prompt tokens, those the upstream read from its prompt cache.
    pub cached_tokens: u64,
    /// Cost of the served requests, in millionths of a USD.
    pub cost_micro_usd: u64,
    /// Of the admitted, those handed out ahead in credits (spent without asking, or given back).
    pub credited: u64,
    /// Milliseconds the scheduled requests were told to wait for their slots, summed.
    pub wait_ms: u64,
    /// 429s the gateway answered clients for want of capacity, with this bucket first choice.
    pub passed_429: u64,
    /// Requests meant for this bucket's model served by a lower one (downgraded)...
    pub downgraded: u64,
    /// ...what that saved against this model's price (millionths of a USD)...
    pub downgrade_saved_micro_usd: u64,
    /// ...or cost more (a lower model priced higher).
    pub downgrade_lost_micro_usd: u64,
}

/// Small, serializable view for callers to cache and for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Earliest start for a 1-token request; None = parked manually (or nothing ever fits).
    pub free_at_ms: Option<u64>,
    /// Cooldown end, if cooling.
    pub cooling_until_ms: Option<u64>,
    /// Park reason, if parked.
    pub parked: Option<String>,
    /// Park end (then one probe); None with `parked` = until cleared.
    pub parked_until_ms: Option<u64>,
    /// Share of the full request rate allowed now (slow start, surge hold), 1.0 normally.
    pub rate_factor: f64,
    /// The send rate's growth per second in force (learned from surges, else configured).
    pub growth: Option<f64>,
    /// How much the windows are widened (measured lateness spread plus learned margin), in ms.
    pub lag_margin_ms: u64,
    /// Leases not yet settled nor expired.
    pub in_flight: u64,
    /// Requests and tokens in the current minute window.
    pub used_minute: Used,
    /// Requests and tokens in the current second window.
    pub used_second: Used,
    /// Running totals.
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cooldown {
    until_ms: u64,
    kind: String,
}

/// A bucket's state as operators follow it: a change is logged as one line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// Park reason.
    pub parked: Option<String>,
    /// Park end (None: until an operator clears it).
    pub parked_until_ms: Option<u64>,
    /// Whose park it is.
    pub parked_of: ParkOf,
    /// Cooldown kind and end.
    pub cooling: Option<(String, u64)>,
    /// Surge hold end.
    pub held_until_ms: Option<u64>,
    /// Keys (secret names) the upstream refused.
    pub refused_keys: Vec<String>,
    /// When operators were last told that clients are refused for want of capacity.
    pub refusals_told_ms: u64,
    /// When operators were last told that clients get 500 for want of a key, and the secrets
    /// to set.
    pub no_key_told: (u64, Vec<String>),
}

impl Marks {
    /// The state changes from `before` to `self`: (event, details) for the log.
    pub fn changes_since(&self, before: &Marks) -> Vec<(&'static str, serde_json::Value)> {
        use serde_json::json;
        let mut out = Vec::new();
        match (&before.parked, &self.parked) {
            (None, Some(reason)) => out.push((
                "bucket_parked",
                json!({ "reason": reason, "until_ms": self.parked_until_ms, "of": self.parked_of }),
            )),
            (Some(reason), None) => out.push((
                "bucket_unparked",
                json!({ "was": reason, "of": before.parked_of }),
            )),
            _ => {}
        }
        match (&before.cooling, &self.cooling) {
            (None, Some((kind, until))) => {
                out.push(("bucket_cooling", json!({ "kind": kind, "until_ms": until })))
            }
            (Some(_), None) if self.parked.is_none() => out.push(("bucket_cooled", json!({}))),
            _ => {}
        }
        if let (None, Some(until)) = (before.held_until_ms, self.held_until_ms) {
            out.push(("bucket_ramp", json!({ "held_until_ms": until })));
        }
        let refused: Vec<&String> = (self.refused_keys.iter())
            .filter(|k| !before.refused_keys.contains(k))
            .collect();
        if !refused.is_empty() {
            out.push(("bucket_key_refused", json!({ "keys": refused })));
        }
        if self.refusals_told_ms > before.refusals_told_ms {
            out.push(("clients_refused", json!({})));
        }
        if self.no_key_told.0 > before.no_key_told.0 {
            out.push((
                "clients_failed_no_key",
                json!({ "keys": self.no_key_told.1 }),
            ));
        }
        out
    }
}

/// Everything one bucket remembers; persisted as JSON when it changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BucketState {
    #[serde(default)]
    windows: Windows,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    leases: Vec<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cooldown: Option<Cooldown>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    park: Option<Park>,
    #[serde(default)]
    pace: Pace,
    #[serde(default)]
    counters: Counters,
    #[serde(default)]
    next_lease: u64,
    /// Keys (secret names, never the keys) the upstream refused; cleared by an operator.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    refused_keys: BTreeSet<String>,
    /// The open minute and day of its history (closed ones are stored by the object).
    #[serde(default)]
    history: History,
    /// When operators were last told that clients are refused for want of capacity here
    /// (`BucketState::passed_on`; 0: never).
    #[serde(default, skip_serializing_if = "lease::is_zero")]
    refusals_told_ms: u64,
    /// When operators were last told that clients get 500 for want of a key, and the secrets
    /// named (`BucketState::no_key_set`; 0: never).
    #[serde(default, skip_serializing_if = "lease::is_zero")]
    no_key_told_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    no_key_secrets: Vec<String>,
}

impl BucketState {
    /// The state stored as `json`; an earlier form's windows (a list of requests) are read as
    /// they were, so a deploy keeps every bucket's windows, parks and counters. Empty when
    /// nothing readable is stored.
    pub fn from_stored(json: &str) -> BucketState {
        if let Ok(state) = serde_json::from_str(json) {
            return state;
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) else {
            return BucketState::default();
        };
        if let Some(windows) = value.get_mut("windows") {
            *windows = Windows::from_log(windows);
        }
        // Back through the one deserializer the state has (from_value would be a second).
        serde_json::from_str(&value.to_string()).unwrap_or_default()
    }

    /// Counts a 429 the gateway answered a client with this bucket its first choice.
    /// Operators are told once an hour (`hour_ms`, compressed in tests) at most, from the
    /// first such refusal after a quiet hour (`Marks::refusals_told_ms`).
    pub fn passed_on(&mut self, now_ms: u64, hour_ms: u64) {
        bump(&mut self.counters.passed_429, 1);
        if self.refusals_told_ms == 0 || now_ms >= self.refusals_told_ms.saturating_add(hour_ms) {
            self.refusals_told_ms = now_ms;
        }
    }

    /// A client answered 500 with this bucket its first choice: its model has no account with
    /// a key set (`secrets`, the ones to set). Operators are told at most once an hour
    /// (`hour_ms`), and at once when the secrets to set are others.
    pub fn no_key_set(&mut self, now_ms: u64, hour_ms: u64, secrets: &[String]) {
        let quiet = now_ms >= self.no_key_told_ms.saturating_add(hour_ms);
        if self.no_key_told_ms == 0 || quiet || self.no_key_secrets != secrets {
            self.no_key_told_ms = now_ms;
            self.no_key_secrets = secrets.to_vec();
        }
    }

    /// Counts a request meant for this bucket's model served by a lower one, and what that
    /// saved (negative: lost), when both are priced.
    pub fn downgraded(&mut self, saved_micro_usd: Option<i64>) {
        bump(&mut self.counters.downgraded, 1);
        match saved_micro_usd {
            Some(s) if s >= 0 => bump(
                &mut self.counters.downgrade_saved_micro_usd,
                s.unsigned_abs(),
            ),
            Some(s) => bump(
                &mut self.counters.downgrade_lost_micro_usd,
                s.unsigned_abs(),
            ),
            None => {}
        }
    }

    /// Running totals.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The history's open periods.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Adds to the history what the last call changed (`before`: the counters before it).
    pub fn record_history(&mut self, now_ms: u64, policy: &Policy, before: &Counters) {
        let used = self.windows.usage(now_ms, policy.spec.minute_ms);
        self.history
            .record(now_ms, policy.limits, (before, &self.counters), used);
    }

    /// The history periods closed since the last take, for the object to store.
    pub fn take_closed_history(&mut self) -> Closed {
        self.history.take_closed()
    }

    /// What operators are told about when it changes: park, cooldown, surge hold, refused keys.
    pub fn marks(&self, now_ms: u64) -> Marks {
        Marks {
            parked: self.park.as_ref().map(|p| p.reason.clone()),
            parked_until_ms: self.park.as_ref().and_then(|p| p.until_ms),
            parked_of: self.park.as_ref().map(|p| p.of).unwrap_or_default(),
            cooling: self
                .cooldown
                .as_ref()
                .filter(|c| c.until_ms > now_ms)
                .map(|c| (c.kind.clone(), c.until_ms)),
            held_until_ms: self.pace.held_until(now_ms),
            refused_keys: self.refused_keys(),
            refusals_told_ms: self.refusals_told_ms,
            no_key_told: (self.no_key_told_ms, self.no_key_secrets.clone()),
        }
    }

    /// Remembers keys the upstream refused, so no request uses them again.
    pub fn refuse_keys(&mut self, keys: &[String]) {
        self.refused_keys.extend(keys.iter().cloned());
    }

    /// Records how late a send reached the upstream relative to its slot (`pace::lag_ms`).
    pub fn record_lag(&mut self, lag_ms: i64) {
        self.pace.record_lag(lag_ms);
    }

    /// The keys (secret names) refused so far.
    pub fn refused_keys(&self) -> Vec<String> {
        self.refused_keys.iter().cloned().collect()
    }

    /// Admit now, schedule within `max_wait_ms`, or deny with the earliest possible start.
    pub fn acquire(&mut self, now_ms: u64, policy: &Policy, req: &AcquireRequest) -> Admission {
        self.tidy(now_ms, policy.spec, policy.slow_start);
        if let Some(lag) = req.missed_lag_ms {
            self.record_lag(lag);
        }
        let probe = match self
            .park
            .as_ref()
            .map(|p| (p.gate(now_ms, &self.leases), p))
        {
            None => false,
            Some((Gate::Probe, _)) => true,
            Some((Gate::ProbeOut(until_ms), _)) => {
                return self.deny(until_ms, DenyReason::ProbeInFlight)
            }
            Some((Gate::Closed(until_ms), p)) => {
                let reason = DenyReason::Parked(p.reason.clone());
                return self.deny(until_ms, reason);
            }
        };
        let cooling = self.cooling_until(now_ms);
        let from = cooling.unwrap_or(now_ms);
        let Some(start) = self.earliest(from, policy, req.est_tokens) else {
            return self.deny(None, DenyReason::TooLarge);
        };
        if start.saturating_sub(now_ms) > req.max_wait_ms {
            let beyond = |u: u64| u.saturating_sub(now_ms) > req.max_wait_ms;
            let reason = if cooling.is_some_and(beyond) {
                DenyReason::Cooling
            } else {
                DenyReason::Full
            };
            return self.deny(Some(start), reason);
        }
        let widened = self.pace.widened(policy.spec);
        let late_ms = widened.second_ms.saturating_sub(policy.spec.second_ms);
        let credit_size = if req.credit && start == now_ms {
            self.credit_size(now_ms, policy, widened, req.est_tokens)
        } else {
            0
        };
        let lease = self.record(start, req.est_tokens, req.lease_ttl_ms, 1, false);
        if let (true, Some(p)) = (probe, self.park.as_mut()) {
            p.probe = Some(lease);
        }
        self.windows.reserve(start, req.est_tokens);
        bump(&mut self.counters.admitted, 1);
        if start > now_ms {
            bump(&mut self.counters.scheduled, 1);
            bump(&mut self.counters.wait_ms, start - now_ms);
        }
        let credit =
            (credit_size > 0).then(|| self.grant(now_ms, policy, req, credit_size, late_ms));
        Admission::Go {
            lease,
            at_ms: start,
            probe,
            late_ms,
            credit,
        }
    }

    /// A credit asked ahead of need, beside no request (the asking isolate's is nearly spent),
    /// on the same terms as one beside an admission: room now, no pacing rule, no park, no
    /// cooldown; sized as if a request were admitted with it (`credit::size`). None otherwise.
    pub fn grant_ahead(
        &mut self,
        now_ms: u64,
        policy: &Policy,
        req: &AcquireRequest,
    ) -> Option<Credit> {
        self.tidy(now_ms, policy.spec, policy.slow_start);
        let cooling = self.cooling_until(now_ms).is_some();
        if cooling || self.earliest(now_ms, policy, req.est_tokens) != Some(now_ms) {
            return None;
        }
        let widened = self.pace.widened(policy.spec);
        let late_ms = widened.second_ms.saturating_sub(policy.spec.second_ms);
        let count = self.credit_size(now_ms, policy, widened, req.est_tokens);
        (count > 0).then(|| self.grant(now_ms, policy, req, count, late_ms))
    }

    /// Admissions a credit granted now may hold (`credit::size`): none while a pacing rule
    /// (slow start, a surge hold) is in force or the bucket is parked (a probe included).
    fn credit_size(&self, now_ms: u64, policy: &Policy, widened: WindowSpec, tokens: u64) -> u64 {
        if self.park.is_some() || self.pace.growth(policy.slow_start).is_some() {
            return 0;
        }
        credit::size(
            &self.windows,
            now_ms,
            policy.limits,
            widened,
            tokens,
            policy.credit_max,
        )
    }

    /// Records `count` new leases (ids from the one returned) on a slot at `at_ms`, each holding
    /// `tokens`, in flight for `ttl_ms`; a credit's when `credit`.
    fn record(&mut self, at_ms: u64, tokens: u64, ttl_ms: u64, count: u64, credit: bool) -> u64 {
        let id = self.next_lease;
        self.next_lease = self.next_lease.saturating_add(count);
        let expires_ms = at_ms.saturating_add(ttl_ms);
        self.leases.push(Lease {
            id,
            count,
            settled: 0,
            at_ms,
            tokens,
            credit: credit.then_some(id),
            expires_ms: Some(expires_ms),
            dropped_ms: expires_ms,
        });
        id
    }

    /// Hands out `count` admissions of the request's size ahead, counted from now to the
    /// credit's end.
    fn grant(
        &mut self,
        now_ms: u64,
        policy: &Policy,
        req: &AcquireRequest,
        count: u64,
        late_ms: u64,
    ) -> Credit {
        let life_ms = credit::life_ms(policy.spec);
        let until_ms = now_ms.saturating_add(life_ms);
        // One record for the credit's admissions: settled one by one, dropped when all are.
        let ttl_ms = life_ms.saturating_add(req.lease_ttl_ms);
        let first_lease = self.record(now_ms, req.est_tokens, ttl_ms, count, true);
        let tokens = req.est_tokens.saturating_mul(count);
        self.windows
            .reserve_credit(first_lease, (now_ms, until_ms), count, tokens);
        bump(&mut self.counters.admitted, count);
        bump(&mut self.counters.credited, count);
        Credit {
            first_lease,
            count,
            tokens: req.est_tokens,
            until_ms,
            late_ms,
            spent: 0,
        }
    }

    /// Gives back admissions never spent (of an expired or dropped credit).
    pub fn give_back(&mut self, now_ms: u64, policy: &Policy, leases: &[u64]) {
        self.tidy(now_ms, policy.spec, policy.slow_start);
        for &lease in leases {
            self.end(now_ms, policy, lease, &SettleOutcome::Released);
        }
    }

    /// A stream has started on `lease`: it stays in flight until settled, however long the
    /// stream lasts. Unknown leases are ignored.
    pub fn commit(&mut self, now_ms: u64, lease: u64) {
        if let Some(l) = self.leases.iter_mut().find(|l| l.bit(lease).is_some()) {
            l.expires_ms = None;
            l.dropped_ms = now_ms.saturating_add(COMMITTED_LEASE_MS);
        }
    }

    /// Record how a lease ended; unknown (already settled or dropped) leases are ignored.
    pub fn settle(&mut self, now_ms: u64, policy: &Policy, lease: u64, outcome: &SettleOutcome) {
        self.housekeeping(now_ms, policy);
        self.end(now_ms, policy, lease, outcome);
    }

    /// What time has done (leases and window entries gone, entries merged, a cooldown over),
    /// done before each change; a batch does it once, since within one instant a second pass
    /// finds nothing new that matters (`end` after it).
    pub fn housekeeping(&mut self, now_ms: u64, policy: &Policy) {
        self.tidy(now_ms, policy.spec, policy.slow_start);
    }

    /// `settle` without the housekeeping (done once by the caller).
    pub fn end(&mut self, now_ms: u64, policy: &Policy, lease: u64, outcome: &SettleOutcome) {
        let Some((i, bit)) = self
            .leases
            .iter()
            .enumerate()
            .find_map(|(i, l)| l.bit(lease).map(|bit| (i, bit)))
        else {
            return;
        };
        let Some(record) = self.leases.get_mut(i) else {
            return;
        };
        record.settled |= bit;
        let (at_ms, tokens, credit) = (record.at_ms, record.tokens, record.credit);
        if record.open() == 0 {
            self.leases.remove(i);
        }
        let probe = self.park.as_mut().filter(|p| p.probe == Some(lease));
        if probe.is_some_and(|p| p.probe_ended(now_ms, outcome)) {
            self.park = None;
        }
        match outcome {
            SettleOutcome::Ok {
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                cost_micro_usd,
            } => {
                let known = prompt_tokens
                    .unwrap_or(0)
                    .saturating_add(completion_tokens.unwrap_or(0));
                let actual = match (prompt_tokens, completion_tokens) {
                    (None, None) => None,
                    (Some(_), Some(_)) => Some(known),
                    _ => Some(tokens.max(known)),
                };
                // A long stream's entry may have left the windows: its tokens land now.
                let reconciled = |t: &u64| !self.windows.reconcile(at_ms, tokens, credit, *t);
                if let Some(actual) = actual.filter(reconciled) {
                    self.windows.add_tokens(now_ms, actual);
                }
                bump(&mut self.counters.ok, 1);
                bump(&mut self.counters.prompt_tokens, prompt_tokens.unwrap_or(0));
                bump(
                    &mut self.counters.completion_tokens,
                    completion_tokens.unwrap_or(0),
                );
                bump(&mut self.counters.cached_tokens, *cached_tokens);
                bump(&mut self.counters.cost_micro_usd, *cost_micro_usd);
            }
            SettleOutcome::Released => {
                self.windows.release(at_ms, tokens, credit);
                bump(&mut self.counters.released, 1);
            }
            SettleOutcome::Cancelled => {
                bump(&mut self.counters.cancelled, 1);
            }
            SettleOutcome::Failed => {
                self.windows.reconcile(at_ms, tokens, credit, 0);
                bump(&mut self.counters.failed, 1);
            }
            SettleOutcome::Cooldown { ms, kind, hinted } => {
                self.windows.release(at_ms, tokens, credit);
                // The first window-limit 429 in a minute with no wait given is jitter: the
                // windows widen and the bucket goes on; a second one means the limit is real.
                let window_limit = matches!(kind.as_str(), "requests" | "tokens");
                if *hinted || !window_limit || self.pace.on_surprise(now_ms, policy.spec) {
                    self.cool(now_ms.saturating_add(*ms), kind);
                }
                bump(&mut self.counters.rate_limited, 1);
                if kind == "tokens" {
                    bump(&mut self.counters.rate_limited_tokens, 1);
                }
            }
            SettleOutcome::Burst => {
                self.windows.release(at_ms, tokens, credit);
                self.pace
                    .on_surge(now_ms, policy.spec, policy.slow_start, &self.windows);
                bump(&mut self.counters.burst, 1);
            }
            SettleOutcome::Park {
                reason,
                for_ms,
                account,
            } => {
                self.windows.release(at_ms, tokens, credit);
                let of = if *account {
                    ParkOf::Account
                } else {
                    ParkOf::Bucket
                };
                self.park(now_ms, reason, *for_ms, of);
            }
        }
    }

    /// Operator action: clear a park (and cooldown, pacing lessons and refused keys); the next
    /// request goes normally.
    pub fn clear(&mut self, now_ms: u64) {
        self.drop_old_leases(now_ms);
        self.park = None;
        self.cooldown = None;
        self.pace.forget_lessons();
        self.refused_keys.clear();
    }

    /// Park (a hard failure, or another bucket of the same account learned the account is
    /// parked). A manual park is never shortened by a timed one; a timed park only lengthens.
    pub fn park(&mut self, now_ms: u64, reason: &str, for_ms: Option<u64>, of: ParkOf) {
        self.drop_old_leases(now_ms);
        bump(&mut self.counters.parked, 1);
        let newer = Park::new(now_ms, reason, for_ms, of);
        self.park = Some(match self.park.take() {
            Some(old) => old.merged(newer),
            None => newer,
        });
    }

    /// The share of room left in its windows now, the tightest of its limits (1.0 with none;
    /// scheduled slots and outstanding credits count as used): what rotation spreads load by.
    pub fn headroom(&self, now_ms: u64, policy: &Policy) -> f64 {
        let share = |used: u64, limit: Option<u64>| {
            limit.map_or(1.0, |k| 1.0 - used as f64 / k.max(1) as f64)
        };
        caps(policy.limits, self.pace.widened(policy.spec))
            .iter()
            .map(|cap| {
                let used = self.windows.counted_from(now_ms, cap.window_ms);
                share(used.requests, cap.requests).min(share(used.tokens, cap.tokens))
            })
            .fold(1.0, f64::min)
            .clamp(0.0, 1.0)
    }

    /// Earliest start of a 1-token request: a fact about the bucket, not about one request
    /// (None: parked until cleared).
    pub fn free_at(&self, now_ms: u64, policy: &Policy) -> Option<u64> {
        let from = match self.park.as_ref().map(|p| p.gate(now_ms, &self.leases)) {
            Some(Gate::Closed(None)) => return None,
            Some(Gate::Closed(Some(until))) => until,
            Some(Gate::ProbeOut(until)) => until?,
            Some(Gate::Probe) | None => now_ms,
        };
        let from = from.max(self.cooling_until(now_ms).unwrap_or(now_ms));
        self.earliest(from, policy, 1)
    }

    /// The view callers cache and the dashboard shows.
    pub fn snapshot(&self, now_ms: u64, policy: &Policy) -> Snapshot {
        Snapshot {
            free_at_ms: self.free_at(now_ms, policy),
            cooling_until_ms: self.cooling_until(now_ms),
            parked: self.park.as_ref().map(|p| p.reason.clone()),
            parked_until_ms: self.park.as_ref().and_then(|p| p.until_ms),
            rate_factor: self.pace.rate_factor(
                now_ms,
                &self.windows,
                policy.limits,
                policy.spec,
                policy.slow_start,
            ),
            growth: self.pace.growth(policy.slow_start),
            lag_margin_ms: self
                .pace
                .widened(policy.spec)
                .second_ms
                .saturating_sub(policy.spec.second_ms),
            in_flight: self
                .leases
                .iter()
                .filter(|l| l.live(now_ms))
                .map(Lease::open)
                .sum(),
            used_minute: self.windows.usage(now_ms, policy.spec.minute_ms),
            used_second: self.windows.usage(now_ms, policy.spec.second_ms),
            counters: self.counters.clone(),
        }
    }

    /// Earliest start >= `from` for `tokens` that keeps the windows and the pacing.
    fn earliest(&self, from: u64, policy: &Policy, tokens: u64) -> Option<u64> {
        self.pace.earliest_start(
            &self.windows,
            from,
            policy.limits,
            policy.spec,
            policy.slow_start,
            tokens,
        )
    }

    fn deny(&mut self, until_ms: Option<u64>, reason: DenyReason) -> Admission {
        bump(&mut self.counters.denied, 1);
        Admission::Denied { until_ms, reason }
    }

    fn cool(&mut self, until_ms: u64, kind: &str) {
        if self.cooldown.as_ref().is_none_or(|c| c.until_ms < until_ms) {
            self.cooldown = Some(Cooldown {
                until_ms,
                kind: kind.to_string(),
            });
        }
    }

    fn cooling_until(&self, now_ms: u64) -> Option<u64> {
        self.cooldown
            .as_ref()
            .map(|c| c.until_ms)
            .filter(|&u| u > now_ms)
    }

    /// Drop the records of leases nobody will settle (their worker died); their window entries
    /// stay counted at the estimate.
    fn drop_old_leases(&mut self, now_ms: u64) {
        self.leases.retain(|l| l.dropped_ms >= now_ms);
    }

    /// Housekeeping before every change: drop dead leases, prune and compact the windows, end
    /// finished cooldowns and surge holds.
    fn tidy(&mut self, now_ms: u64, spec: WindowSpec, slow_start: Option<SlowStart>) {
        self.drop_old_leases(now_ms);
        let widened = self.pace.widened(spec);
        self.windows.prune(now_ms, widened);
        let open_credits: Vec<u64> = self.leases.iter().filter_map(|l| l.credit).collect();
        let look_back = pace::LOOK_BACK_WINDOWS.saturating_mul(widened.second_ms);
        self.windows.compact(now_ms, spec, look_back, &open_credits);
        if self.cooling_until(now_ms).is_none() {
            self.cooldown = None;
        }
        self.pace.tidy(now_ms, spec, slow_start);
    }
}

fn bump(counter: &mut u64, by: u64) {
    *counter = counter.saturating_add(by);
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;
