//! Decides, one step at a time, where a request goes: which bucket to ask, when to send,
//! when to retry, when to move down the model chain, and when to give up.
//!
//! Synchronous and pure: the glue runs `loop { match planner.next(now) { ... } }` and feeds
//! back each bucket's admission and each upstream outcome. The planner carries the caller's
//! candidates (any `Choice`), so an action names the candidate itself.

mod giveup;
mod order;

use crate::bucket::{Admission, DenyReason};
use crate::classify::{Outcome, ParkScope};
use crate::openai::ApiError;
use giveup::{Facts, TooLarge};
use order::Rng;

/// Retries of one bucket after server errors before rotating away from it.
const MAX_RETRIES: u32 = 2;
/// Upstream requests per client request, all buckets together (refused keys aside, which
/// have their own budget: the account's keys): bounds every loop.
const MAX_ATTEMPTS: u32 = 8;
/// Slots a request may miss (its send left too late) before it rotates away from the bucket.
const MAX_MISSES: u32 = 3;
/// A first ask accepts a slot within this share of the wait: with paced sends the next slot is
/// usually a little ahead, and taking it saves asking every account first.
const PROBE_WAIT_DIVISOR: u64 = 4;
/// Backoff base and cap for server-error retries (full jitter: uniform in [0, min(cap, base*2^n)]).
const BACKOFF_BASE_MS: u64 = 250;
const BACKOFF_CAP_MS: u64 = 4_000;

/// What the planner needs to know of a candidate (an account serving a step's model).
pub trait Choice: Clone {
    /// Account id.
    fn account(&self) -> &str;
    /// Upstream id.
    fn upstream(&self) -> &str;
    /// Lower goes first.
    fn priority(&self) -> u32;
    /// Share of traffic among equal priorities.
    fn weight(&self) -> f64;
    /// Share of its windows' room the bucket last said it had left (None: not heard lately).
    fn headroom(&self) -> Option<f64> {
        None
    }
    /// Most tokens one request may hold here (None: no token limit).
    fn token_cap(&self) -> Option<u64>;
    /// How many API keys the account has: the budget of refused keys.
    fn keys(&self) -> usize;
    /// What this isolate last heard of the bucket: free from then (None: unknown or free).
    fn known_free_at_ms(&self) -> Option<u64>;
    /// This isolate heard lately that the upstream does not serve the model on the request's
    /// endpoint (`Outcome::Unsupported`, from any of its accounts): it is passed over
    /// without a call.
    fn known_unsupported(&self) -> bool {
        false
    }
}

/// One model of the fallback chain and the candidates that may serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step<C> {
    /// Upstream model name.
    pub model: String,
    /// Candidates allowed for this step.
    pub candidates: Vec<C>,
}

/// Where a candidate sits in the plan; the glue hands it back with each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    step: usize,
    index: usize,
}

/// What the glue should do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<C> {
    /// Ask the candidate's bucket for an admission, accepting a slot at most `max_wait_ms` away.
    Acquire {
        /// Hand back with the answer.
        slot: Slot,
        /// The candidate.
        candidate: C,
        /// Longest acceptable wait for a slot.
        max_wait_ms: u64,
    },
    /// Send the request upstream at `at_ms` (sleep until then) under `lease`.
    Send {
        /// Hand back with the outcome.
        slot: Slot,
        /// The candidate.
        candidate: C,
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

/// What this request knows of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Not asked yet.
    Unasked,
    /// Refused for now; free from `free_at` (None: not before an operator acts). `waited`: it
    /// was already asked with the step's full wait, so it is not asked again.
    Busy { free_at: Option<u64>, waited: bool },
    /// Cannot serve this request.
    Out(Out),
}

/// Why a candidate cannot serve this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// The request is larger than its token limits.
    TooLarge,
    /// Server or network errors, retries used up.
    Failing,
    /// Its bucket's Durable Object did not answer in time.
    Unreachable,
    /// Its upstream does not serve the model on the request's endpoint.
    Unsupported,
}

#[derive(Debug, Clone)]
struct Place<C> {
    choice: C,
    state: State,
    keys_refused: usize,
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
    /// The conversation's cache key (`crate::cache_key`): its accounts are ordered by it
    /// rather than at random, so its turns find their prompt cache.
    pub cache_key: Option<u64>,
    /// The request's estimate: input plus reserved output tokens.
    pub est_tokens: u64,
    /// Of which input.
    pub prompt_tokens: u64,
    /// The request's field holding that input (`messages`, an embeddings' `input`): what an
    /// error names when the input alone is too large.
    pub input_param: &'static str,
}

/// The planner of one client request.
#[derive(Debug, Clone)]
pub struct Planner<C> {
    models: Vec<String>,
    places: Vec<Vec<Place<C>>>,
    order: Vec<Vec<usize>>,
    settings: PlanSettings,
    step: usize,
    rng: Rng,
    ready: Option<Action<C>>,
    retry: Option<(Slot, u32)>,
    sending: Option<(Slot, u64)>,
    attempts: u32,
    keys_refused: u32,
    misses: u32,
    reasons: Vec<(String, &'static str)>,
    server_error: bool,
    unreachable: bool,
    parked: Vec<String>,
    public_model: String,
}

impl<C: Choice> Planner<C> {
    /// A planner for `public_model` over `steps`, each step's candidates ordered by priority and
    /// a weighted shuffle.
    pub fn new(public_model: &str, steps: Vec<Step<C>>, settings: PlanSettings) -> Planner<C> {
        let mut rng = Rng::new(settings.seed);
        let order = steps
            .iter()
            .map(|s| {
                let keys: Vec<(u32, f64)> = s
                    .candidates
                    .iter()
                    .map(|c| (c.priority(), order::by_headroom(c.weight(), c.headroom())))
                    .collect();
                match settings.cache_key {
                    Some(key) => order::weighted(&keys, |i| {
                        let account = s.candidates.get(i).map_or("", |c| c.account());
                        order::keyed(key, account)
                    }),
                    None => order::weighted(&keys, |_| rng.unit()),
                }
            })
            .collect();
        let (models, places) = steps
            .into_iter()
            .map(|s| {
                let places = s.candidates.into_iter().map(|choice| Place {
                    state: match choice.known_unsupported() {
                        true => State::Out(Out::Unsupported),
                        false => State::Unasked,
                    },
                    choice,
                    keys_refused: 0,
                });
                (s.model, places.collect())
            })
            .unzip();
        Planner {
            models,
            places,
            order,
            settings,
            step: 0,
            rng,
            ready: None,
            retry: None,
            sending: None,
            attempts: 0,
            keys_refused: 0,
            misses: 0,
            reasons: Vec::new(),
            server_error: false,
            unreachable: false,
            parked: Vec::new(),
            public_model: public_model.to_string(),
        }
    }

    /// The next thing to do.
    pub fn next(&mut self, now_ms: u64) -> Action<C> {
        if let Some(action) = self.ready.take() {
            return action;
        }
        if now_ms >= self.settings.deadline_ms || self.attempts >= MAX_ATTEMPTS {
            return Action::GiveUp(self.give_up(now_ms, true));
        }
        let left = self.settings.deadline_ms - now_ms;
        let max_wait = self.settings.max_wait_ms.min(left);
        if let Some((slot, _)) = self.retry {
            if let Some(action) = self.acquire(slot, max_wait) {
                return action;
            }
        }
        while self.step < self.places.len() {
            self.skip_known(now_ms);
            if let Some(action) = self.next_in_step(now_ms, max_wait) {
                return action;
            }
            let reason = self.step_reason();
            let model = self.models.get(self.step).cloned().unwrap_or_default();
            self.reasons.push((model, reason));
            if !self.settings.allow_fallback {
                break;
            }
            self.step += 1;
        }
        Action::GiveUp(self.give_up(now_ms, false))
    }

    /// Marks the step's candidates this request need not ask: too small for it, or known
    /// (from this isolate's cache) to be busy.
    fn skip_known(&mut self, now_ms: u64) {
        let est = self.settings.est_tokens;
        for place in self.places.get_mut(self.step).into_iter().flatten() {
            if place.state != State::Unasked {
                continue;
            }
            if place.choice.token_cap().is_some_and(|cap| est > cap) {
                place.state = State::Out(Out::TooLarge);
            } else if let Some(free_at) = place.choice.known_free_at_ms().filter(|&t| t > now_ms) {
                place.state = State::Busy {
                    free_at: Some(free_at),
                    waited: false,
                };
            }
        }
    }

    /// The step's next question: each unasked candidate is asked for a slot soon (within a
    /// quarter of the wait); when none has one, the one that frees earliest within the wait is
    /// asked again with the full wait. The last unasked candidate with nobody else worth waiting for is asked with the
    /// full wait at once (one round trip instead of two). So at most two asks per candidate.
    fn next_in_step(&mut self, now_ms: u64, max_wait: u64) -> Option<Action<C>> {
        let step = self.step;
        let order = self.order.get(step)?.clone();
        let state = |p: &Self, index| p.place(Slot { step, index }).map(|p| p.state);
        let waitable = |s: Option<State>| match s {
            Some(State::Busy {
                free_at: Some(t),
                waited: false,
            }) if t.saturating_sub(now_ms) <= max_wait => Some(t),
            _ => None,
        };
        let unasked: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| state(self, i) == Some(State::Unasked))
            .collect();
        let anyone_waitable = order.iter().any(|&i| waitable(state(self, i)).is_some());
        if let Some(&index) = unasked.first() {
            let slot = Slot { step, index };
            if unasked.len() == 1 && !anyone_waitable {
                self.set(
                    slot,
                    State::Busy {
                        free_at: None,
                        waited: true,
                    },
                );
                return self.acquire(slot, max_wait);
            }
            return self.acquire(slot, max_wait / PROBE_WAIT_DIVISOR);
        }
        let (free_at, index) = order
            .iter()
            .filter_map(|&i| waitable(state(self, i)).map(|t| (t, i)))
            .min_by_key(|(t, _)| *t)?;
        let slot = Slot { step, index };
        self.set(
            slot,
            State::Busy {
                free_at: Some(free_at),
                waited: true,
            },
        );
        self.acquire(slot, max_wait)
    }

    fn acquire(&self, slot: Slot, max_wait_ms: u64) -> Option<Action<C>> {
        let candidate = self.place(slot)?.choice.clone();
        Some(Action::Acquire {
            slot,
            candidate,
            max_wait_ms,
        })
    }

    fn step_reason(&self) -> &'static str {
        let states = || {
            self.places
                .get(self.step)
                .into_iter()
                .flatten()
                .map(|p| p.state)
        };
        if states().next().is_none() {
            // No account of the step may serve (none with a key set, or not the one holding
            // a stored response).
            "unavailable"
        } else if states().all(|s| s == State::Out(Out::TooLarge)) {
            "too_large"
        } else if states().all(|s| s == State::Out(Out::Unsupported)) {
            "unsupported"
        } else if states().all(|s| matches!(s, State::Out(_) | State::Busy { free_at: None, .. })) {
            if self.server_error {
                "upstream_error"
            } else {
                "unavailable"
            }
        } else {
            "no_capacity"
        }
    }

    /// Feeds back a bucket's answer to `Acquire`.
    pub fn on_admission(&mut self, slot: Slot, admission: &Admission) {
        // A retry's count lives until its outcome; a denied retry ends the retrying.
        let retrying = self.retry.is_some_and(|(s, _)| s == slot);
        match admission {
            Admission::Go { lease, at_ms, .. } => {
                if let Some(candidate) = self.place(slot).map(|p| p.choice.clone()) {
                    self.sending = Some((slot, *lease));
                    self.ready = Some(Action::Send {
                        slot,
                        candidate,
                        lease: *lease,
                        at_ms: *at_ms,
                    });
                }
            }
            Admission::Denied { until_ms, reason } => {
                if retrying {
                    self.retry = None;
                }
                if let DenyReason::Parked(why) = reason {
                    self.note_parked(slot, why);
                }
                let waited = retrying
                    || matches!(
                        self.place(slot).map(|p| p.state),
                        Some(State::Busy { waited: true, .. })
                    );
                self.set(
                    slot,
                    match reason {
                        DenyReason::TooLarge => State::Out(Out::TooLarge),
                        _ => State::Busy {
                            free_at: *until_ms,
                            waited,
                        },
                    },
                );
            }
        }
    }

    /// The send could not leave in time for its slot (a stalled isolate): the slot was given
    /// back; ask the same bucket again (a few times, then rotate away from it).
    pub fn on_missed(&mut self, slot: Slot) {
        self.sending = None;
        self.misses += 1;
        if self.misses > MAX_MISSES {
            self.retry = None;
            self.set(slot, parked());
        } else {
            self.retry = Some((slot, 0));
        }
    }

    /// The request's client had room in its own limits only later: the slot was given back
    /// unused while the request waited for its client's; ask the same bucket again.
    pub fn on_client_waited(&mut self, slot: Slot) {
        self.sending = None;
        self.retry = Some((slot, 0));
    }

    /// The bucket's Durable Object failed or did not answer in time: rotate away from it.
    pub fn on_bucket_unreachable(&mut self, slot: Slot) {
        if self.retry.is_some_and(|(s, _)| s == slot) {
            self.retry = None;
        }
        self.unreachable = true;
        self.set(slot, State::Out(Out::Unreachable));
    }

    /// Feeds back the upstream's answer to `Send` (anything but success).
    pub fn on_outcome(&mut self, slot: Slot, outcome: &Outcome, now_ms: u64) {
        let lease = self
            .sending
            .take()
            .filter(|(s, _)| *s == slot)
            .map(|(_, l)| l);
        if let Outcome::KeyRefused { reason } = outcome {
            return self.on_key_refused(slot, lease, reason, now_ms);
        }
        self.attempts += 1;
        let retries = match self.retry.take() {
            Some((s, n)) if s == slot => n,
            _ => 0,
        };
        match outcome {
            Outcome::Success | Outcome::KeyRefused { .. } => {}
            // Busy, not waited: a short cooldown may still end within the allowed wait.
            Outcome::Cooldown {
                cooldown_ms: ms, ..
            }
            | Outcome::Burst { backoff_ms: ms } => self.set(slot, busy(now_ms, *ms)),
            Outcome::Unavailable { cooldown_ms } => {
                self.set_upstream(slot, busy(now_ms, *cooldown_ms));
            }
            Outcome::Park { scope, reason, .. } => {
                self.note_parked(slot, reason);
                self.set(slot, parked());
                if *scope == ParkScope::Account {
                    let account = self.place(slot).map(|p| p.choice.account().to_string());
                    let all = self.places.iter_mut().flatten();
                    for place in all.filter(|p| Some(p.choice.account()) == account.as_deref()) {
                        place.state = parked();
                    }
                }
            }
            Outcome::TooLarge => self.set(slot, State::Out(Out::TooLarge)),
            // What an endpoint serves is the upstream's, not the account's: the step's other
            // accounts there would answer the same.
            Outcome::Unsupported => self.set_upstream(slot, State::Out(Out::Unsupported)),
            Outcome::Retry { after_ms } => {
                self.server_error = true;
                if retries < MAX_RETRIES {
                    let cap = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS << retries);
                    let jitter = (self.rng.unit() * cap as f64) as u64;
                    let left = self.settings.deadline_ms.saturating_sub(now_ms);
                    self.retry = Some((slot, retries + 1));
                    self.ready = Some(Action::Backoff {
                        ms: after_ms.unwrap_or(jitter).min(BACKOFF_CAP_MS).min(left),
                    });
                } else {
                    self.set(slot, State::Out(Out::Failing));
                }
            }
            Outcome::Client(e) => self.ready = Some(Action::GiveUp(e.clone())),
        }
    }

    /// A refused key is the key's fault, not the account's: send again at once with the next
    /// key under the same lease, until every key of the account was refused.
    fn on_key_refused(&mut self, slot: Slot, lease: Option<u64>, reason: &str, now_ms: u64) {
        self.keys_refused += 1;
        let Some(place) = self.place_mut(slot) else {
            return;
        };
        place.keys_refused += 1;
        match lease {
            Some(lease) if place.keys_refused < place.choice.keys() => {
                let candidate = place.choice.clone();
                self.sending = Some((slot, lease));
                self.ready = Some(Action::Send {
                    slot,
                    candidate,
                    lease,
                    at_ms: now_ms,
                });
            }
            _ => {
                self.note_parked(slot, &format!("{reason} (every key refused)"));
                self.set(slot, parked());
            }
        }
    }

    /// Upstream requests sent so far, refused keys included.
    pub fn attempts(&self) -> u32 {
        self.attempts + self.keys_refused
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

    fn place(&self, slot: Slot) -> Option<&Place<C>> {
        self.places.get(slot.step)?.get(slot.index)
    }

    fn place_mut(&mut self, slot: Slot) -> Option<&mut Place<C>> {
        self.places.get_mut(slot.step)?.get_mut(slot.index)
    }

    fn set(&mut self, slot: Slot, state: State) {
        if let Some(p) = self.place_mut(slot) {
            p.state = state;
        }
    }

    /// Sets `state` on every candidate of the slot's step at the slot's upstream.
    fn set_upstream(&mut self, slot: Slot, state: State) {
        let upstream = self.place(slot).map(|p| p.choice.upstream().to_string());
        let step = self.places.get_mut(slot.step).into_iter().flatten();
        for place in step.filter(|p| Some(p.choice.upstream()) == upstream.as_deref()) {
            place.state = state;
        }
    }

    fn note_parked(&mut self, slot: Slot, reason: &str) {
        let Some(place) = self.place(slot) else {
            return;
        };
        let model = self.models.get(slot.step).map_or("", String::as_str);
        let entry = format!("{}/{model}: {reason}", place.choice.account());
        if !self.parked.contains(&entry) {
            self.parked.push(entry);
        }
    }

    fn give_up(&self, now_ms: u64, out_of_time: bool) -> ApiError {
        let considered = self.step.min(self.places.len().saturating_sub(1)) + 1;
        let tried = || self.places.iter().take(considered).flatten();
        let earliest = tried()
            .filter_map(|p| match p.state {
                State::Busy {
                    free_at: Some(t), ..
                } => Some(t),
                _ => None,
            })
            .min();
        let all_too_large = tried().all(|p| p.state == State::Out(Out::TooLarge));
        let too_large = (all_too_large && tried().next().is_some()).then(|| TooLarge {
            est_tokens: self.settings.est_tokens,
            prompt_tokens: self.settings.prompt_tokens,
            input_param: self.settings.input_param,
            largest_limit: tried().filter_map(|p| p.choice.token_cap()).max(),
        });
        let unsupported =
            tried().next().is_some() && tried().all(|p| p.state == State::Out(Out::Unsupported));
        giveup::render(&Facts {
            public_model: &self.public_model,
            tried: self
                .models
                .iter()
                .take(considered)
                .map(String::as_str)
                .collect(),
            earliest_free_in_ms: earliest.map(|t| t.saturating_sub(now_ms)),
            out_of_time,
            server_error: self.server_error,
            unreachable: self.unreachable,
            parked: &self.parked,
            too_large,
            unsupported,
        })
    }
}

fn busy(now_ms: u64, for_ms: u64) -> State {
    State::Busy {
        free_at: Some(now_ms.saturating_add(for_ms)),
        waited: false,
    }
}

fn parked() -> State {
    State::Busy {
        free_at: None,
        waited: true,
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
