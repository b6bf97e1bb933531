//! Decides, one step at a time, where a request goes: which bucket to ask, when to send,
//! when to retry, when to move down the model chain, and when to give up.
//!
//! Synchronous and pure: the glue runs `loop { match planner.next(now) { ... } }` and feeds
//! back each bucket's admission and each upstream outcome.

use crate::bucket::{Admission, DenyReason};
use crate::classify::{Outcome, ParkScope};
use crate::openai::ApiError;

/// Retries of one bucket after server errors before rotating away from it.
const MAX_RETRIES: u32 = 2;
/// Upstream requests per client request, all buckets together: bounds every loop.
const MAX_ATTEMPTS: u32 = 8;
/// Backoff base and cap for server-error retries (full jitter: uniform in [0, min(cap, base*2^n)]).
const BACKOFF_BASE_MS: u64 = 250;
const BACKOFF_CAP_MS: u64 = 4_000;

/// One account that may serve a step.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCandidate {
    /// Account id.
    pub account: String,
    /// Upstream id.
    pub upstream: String,
    /// Lower goes first.
    pub priority: u32,
    /// Share of traffic among equal priorities.
    pub weight: f64,
    /// What this isolate last heard of the bucket: free from this time (None = unknown).
    pub known_free_at_ms: Option<u64>,
}

/// One model of the fallback chain and the accounts that may serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    /// Upstream model name.
    pub model: String,
    /// Accounts allowed for this step.
    pub candidates: Vec<PlanCandidate>,
}

/// A bucket in the plan: step index and candidate index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Index into the steps.
    pub step: usize,
    /// Index into that step's candidates.
    pub candidate: usize,
}

/// What the glue should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the bucket for an admission, accepting a slot at most `max_wait_ms` away.
    Acquire {
        /// The bucket.
        target: Target,
        /// Longest acceptable wait for a slot.
        max_wait_ms: u64,
    },
    /// Send the request upstream at `at_ms` (sleep until then) under `lease`.
    Send {
        /// The bucket.
        target: Target,
        /// The admission's lease, settled afterwards.
        lease: u64,
        /// When to send.
        at_ms: u64,
    },
    /// Sleep this long, then call `next` again (backoff before a retry).
    Backoff {
        /// Milliseconds to sleep.
        ms: u64,
    },
    /// Stop: answer the client with this error.
    GiveUp(ApiError),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Not asked yet.
    Untried,
    /// Asked once with no wait and refused until then (None: parked until an operator clears it).
    Busy(Option<u64>),
    /// Already asked with the step's full wait: do not ask again.
    Waited(Option<u64>),
    /// Cannot serve this request (too large, parked key, server errors exhausted).
    Dead,
}

/// Settings of one planning run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSettings {
    /// Longest scheduled wait per step before moving down the chain.
    pub max_wait_ms: u64,
    /// Absolute time after which the request gives up.
    pub deadline_ms: u64,
    /// Whether the client allows a lower model.
    pub allow_fallback: bool,
    /// Seed for ordering and jitter.
    pub seed: u64,
}

/// The planner of one client request.
#[derive(Debug, Clone)]
pub struct Planner {
    steps: Vec<PlanStep>,
    order: Vec<Vec<usize>>,
    states: Vec<Vec<State>>,
    settings: PlanSettings,
    step: usize,
    rng: u64,
    ready: Option<Action>,
    retry: Option<(Target, u32)>,
    attempts: u32,
    reasons: Vec<(String, &'static str)>,
    server_error: Option<String>,
    parked: Vec<String>,
    public_model: String,
}

impl Planner {
    /// A planner for `public_model` over `steps`, ordering each step's candidates by priority and
    /// a weighted shuffle (so load spreads by weight across requests and isolates).
    pub fn new(public_model: &str, steps: Vec<PlanStep>, settings: PlanSettings) -> Planner {
        let mut rng = settings.seed | 1;
        let order = steps
            .iter()
            .map(|s| {
                let mut keyed: Vec<(u32, f64, usize)> = s
                    .candidates
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let u = unit(&mut rng);
                        // Efraimidis-Spirakis: smaller -ln(u)/w first gives a weighted order.
                        (c.priority, -u.ln() / c.weight.max(f64::MIN_POSITIVE), i)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
                keyed.into_iter().map(|(_, _, i)| i).collect()
            })
            .collect();
        let states = steps
            .iter()
            .map(|s| vec![State::Untried; s.candidates.len()])
            .collect();
        Planner {
            steps,
            order,
            states,
            settings,
            step: 0,
            rng,
            ready: None,
            retry: None,
            attempts: 0,
            reasons: Vec::new(),
            server_error: None,
            parked: Vec::new(),
            public_model: public_model.to_string(),
        }
    }

    /// The next thing to do.
    pub fn next(&mut self, now_ms: u64) -> Action {
        if let Some(action) = self.ready.take() {
            return action;
        }
        if now_ms >= self.settings.deadline_ms || self.attempts >= MAX_ATTEMPTS {
            return Action::GiveUp(self.give_up(now_ms, true));
        }
        let left = self.settings.deadline_ms - now_ms;
        if let Some((target, _)) = self.retry {
            return Action::Acquire {
                target,
                max_wait_ms: self.settings.max_wait_ms.min(left),
            };
        }
        while self.step < self.steps.len() {
            if let Some(action) = self.next_in_step(now_ms, left) {
                return action;
            }
            let reason = self.step_reason();
            let model = self.steps.get(self.step).map(|s| s.model.clone());
            self.reasons.push((model.unwrap_or_default(), reason));
            if !self.settings.allow_fallback {
                break;
            }
            self.step += 1;
        }
        Action::GiveUp(self.give_up(now_ms, false))
    }

    fn next_in_step(&mut self, now_ms: u64, left: u64) -> Option<Action> {
        let step = self.step;
        let max_wait = self.settings.max_wait_ms.min(left);
        let order = self.order.get(step)?.clone();
        let at = |candidate| Target { step, candidate };
        // Candidates this isolate already knows to be busy are not asked during the probe.
        for &i in &order {
            let known = self.candidate(at(i)).and_then(|c| c.known_free_at_ms);
            if let (Some(State::Untried), Some(free_at)) = (self.state(at(i)), known) {
                if free_at > now_ms {
                    self.set(at(i), State::Busy(Some(free_at)));
                }
            }
        }
        let untried: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.state(at(i)) == Some(State::Untried))
            .collect();
        let waitable = |s: Option<State>| match s {
            Some(State::Busy(Some(t))) if t.saturating_sub(now_ms) <= max_wait => Some(t),
            _ => None,
        };
        let anyone_waitable = order.iter().any(|&i| waitable(self.state(at(i))).is_some());
        if let Some(&i) = untried.first() {
            // The last untried bucket with nobody else to wait for is asked with the full wait:
            // one round trip instead of two for single-account steps.
            let wait = if untried.len() == 1 && !anyone_waitable {
                max_wait
            } else {
                0
            };
            if wait > 0 {
                self.set(at(i), State::Waited(None));
            }
            return Some(Action::Acquire {
                target: at(i),
                max_wait_ms: wait,
            });
        }
        // Everyone answered: wait for the earliest bucket if within the allowed wait.
        let (until, i) = order
            .iter()
            .filter_map(|&i| waitable(self.state(at(i))).map(|t| (t, i)))
            .min_by_key(|(t, _)| *t)?;
        self.set(at(i), State::Waited(Some(until)));
        Some(Action::Acquire {
            target: at(i),
            max_wait_ms: max_wait,
        })
    }

    fn step_reason(&self) -> &'static str {
        let states = self
            .states
            .get(self.step)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if states
            .iter()
            .all(|s| matches!(s, State::Dead | State::Busy(None) | State::Waited(None)))
            && self.server_error.is_some()
        {
            "upstream_error"
        } else if states
            .iter()
            .all(|s| matches!(s, State::Dead | State::Busy(None) | State::Waited(None)))
        {
            "unavailable"
        } else {
            "no_capacity"
        }
    }

    /// Feeds back a bucket's answer to `Acquire`.
    pub fn on_admission(&mut self, target: Target, admission: &Admission, _now_ms: u64) {
        let retrying = self.retry.is_some_and(|(t, _)| t == target);
        match admission {
            Admission::Go { lease, at_ms, .. } => {
                self.ready = Some(Action::Send {
                    target,
                    lease: *lease,
                    at_ms: *at_ms,
                });
            }
            Admission::Denied { until_ms, reason } => {
                if let DenyReason::Parked(why) = reason {
                    self.note_parked(target, why);
                }
                let Some(state) = self.state_mut(target) else {
                    return;
                };
                let waited = matches!(state, State::Waited(_)) || retrying;
                *state = match (reason, waited) {
                    (DenyReason::TooLarge, _) => State::Dead,
                    (_, true) => State::Waited(*until_ms),
                    (_, false) => State::Busy(*until_ms),
                };
                if retrying {
                    self.retry = None;
                }
            }
        }
    }

    /// Feeds back the upstream's answer to `Send` (anything but success).
    pub fn on_outcome(&mut self, target: Target, outcome: &Outcome, now_ms: u64) {
        self.attempts += 1;
        let retries = match self.retry {
            Some((t, n)) if t == target => n,
            _ => 0,
        };
        self.retry = None;
        match outcome {
            Outcome::Success => {}
            // Busy, not Waited: a short cooldown may still end within the allowed wait.
            Outcome::Cooldown { cooldown_ms, .. } => {
                self.set(target, State::Busy(Some(now_ms + cooldown_ms)))
            }
            Outcome::Burst { backoff_ms } => {
                self.set(target, State::Busy(Some(now_ms + backoff_ms)))
            }
            Outcome::Unavailable { cooldown_ms } => {
                let until = State::Busy(Some(now_ms + cooldown_ms));
                let upstream = self.candidate(target).map(|c| c.upstream.clone());
                for i in 0..self.states.get(target.step).map_or(0, Vec::len) {
                    let other = Target {
                        step: target.step,
                        candidate: i,
                    };
                    if self.candidate(other).map(|c| &c.upstream) == upstream.as_ref() {
                        self.set(other, until);
                    }
                }
            }
            Outcome::Park { scope, reason, .. } => {
                self.note_parked(target, reason);
                self.set(target, State::Waited(None));
                if *scope == ParkScope::Account {
                    if let Some(account) = self.candidate(target).map(|c| c.account.clone()) {
                        self.for_account(&account, State::Waited(None));
                    }
                }
            }
            Outcome::TooLarge => self.set(target, State::Dead),
            Outcome::Retry { after_ms } => {
                self.server_error = self.model(target).map(str::to_string);
                if retries < MAX_RETRIES {
                    let cap = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS << retries);
                    let jitter = (unit(&mut self.rng) * cap as f64) as u64;
                    self.retry = Some((target, retries + 1));
                    self.ready = Some(Action::Backoff {
                        ms: after_ms.unwrap_or(jitter).min(BACKOFF_CAP_MS),
                    });
                } else {
                    self.set(target, State::Dead);
                }
            }
            Outcome::Client(e) => self.ready = Some(Action::GiveUp(e.clone())),
        }
    }

    /// Upstream requests sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why the served model is not the first of the chain: `model:reason,...`, or None.
    pub fn fallback_reason(&self) -> Option<String> {
        (!self.reasons.is_empty()).then(|| {
            self.reasons
                .iter()
                .map(|(m, r)| format!("{m}:{r}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The step and account a target names.
    pub fn candidate(&self, target: Target) -> Option<&PlanCandidate> {
        self.steps
            .get(target.step)?
            .candidates
            .get(target.candidate)
    }

    /// The upstream model of a target's step.
    pub fn model(&self, target: Target) -> Option<&str> {
        self.steps.get(target.step).map(|s| s.model.as_str())
    }

    fn note_parked(&mut self, target: Target, reason: &str) {
        if let Some(c) = self.candidate(target) {
            let model = self.model(target).unwrap_or_default();
            let entry = format!("{}/{model}: {reason}", c.account);
            if !self.parked.contains(&entry) {
                self.parked.push(entry);
            }
        }
    }

    fn state(&self, target: Target) -> Option<State> {
        self.states.get(target.step)?.get(target.candidate).copied()
    }

    fn state_mut(&mut self, target: Target) -> Option<&mut State> {
        self.states.get_mut(target.step)?.get_mut(target.candidate)
    }

    fn set(&mut self, target: Target, state: State) {
        if let Some(s) = self.state_mut(target) {
            *s = state;
        }
    }

    fn for_account(&mut self, account: &str, state: State) {
        for (step, s) in self.steps.iter().enumerate() {
            for (i, c) in s.candidates.iter().enumerate() {
                if c.account == account {
                    if let Some(slot) = self.states.get_mut(step).and_then(|v| v.get_mut(i)) {
                        *slot = state;
                    }
                }
            }
        }
    }

    fn give_up(&self, now_ms: u64, deadline: bool) -> ApiError {
        let tried: Vec<&str> = self
            .steps
            .iter()
            .take(self.step + 1)
            .map(|s| s.model.as_str())
            .collect();
        let earliest = self
            .states
            .iter()
            .flatten()
            .filter_map(|s| match s {
                State::Busy(Some(t)) | State::Waited(Some(t)) => Some(*t),
                _ => None,
            })
            .min();
        let models = tried.join(", ");
        match earliest {
            Some(t) => {
                let wait_s = t.saturating_sub(now_ms).div_ceil(1000).max(1);
                let mut e = ApiError::new(
                    429,
                    "rate_limit_exceeded",
                    Some("rate_limit_exceeded"),
                    format!(
                        "No upstream capacity for `{}` {}: tried {models}. Retry after {wait_s} s.",
                        self.public_model,
                        if deadline {
                            "before the request deadline or attempt limit"
                        } else {
                            "within the allowed wait"
                        },
                    ),
                );
                e.retry_after_s = Some(wait_s);
                e
            }
            None if self.server_error.is_some() => ApiError::bad_gateway(
                "upstream_error",
                format!(
                    "Every upstream for `{}` failed (tried {models}).",
                    self.public_model
                ),
            ),
            None => {
                let mut e = ApiError::new(
                    429,
                    "rate_limit_exceeded",
                    Some("upstreams_parked"),
                    format!(
                        "Every account for `{}` is parked until an operator clears it ({}); tried {models}.",
                        self.public_model,
                        self.parked.join("; ")
                    ),
                );
                e.should_retry = Some(false);
                e
            }
        }
    }
}

/// A uniform number in (0, 1] from a xorshift64* state.
fn unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
    (r as f64 + 1.0) / (1u64 << 53) as f64
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
