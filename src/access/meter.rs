//! One client's (or one user's) usage against its own limits: requests and tokens per minute,
//! tokens per UTC day, spend per UTC month. The state its Durable Object holds.
//!
//! Pure: time comes in as `now_ms`. The minute windows are `window::Windows` (constant size,
//! never admitting what an exact log would refuse). A request reserves its estimate until it
//! settles with what it really used; the day's tokens count reservations in flight, so the
//! daily cap holds exactly. Spend is known only after an answer, so the monthly cap admits
//! while the settled spend is under it: it can be passed by the requests in flight when it
//! is reached, never by more.

use crate::bucket::Counters;
use crate::calendar::{month_of_day, month_start_ms, DAY_MS};
use crate::history::{Closed, History, Period};
use crate::window::{Limits, WindowSpec, Windows};
use serde::{Deserialize, Serialize};

/// The limits a meter enforces (a client's, or a user's narrowed by its token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<u64>,
    /// Spend per UTC month, in millionths of a USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_micro_usd: Option<u64>,
}

impl MeterLimits {
    /// True when nothing is limited (no meter needed).
    pub fn is_unlimited(&self) -> bool {
        *self == MeterLimits::default()
    }

    /// Each limit the tighter of the two.
    pub fn narrowed(self, other: MeterLimits) -> MeterLimits {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        MeterLimits {
            rpm: min(self.rpm, other.rpm),
            tpm: min(self.tpm, other.tpm),
            daily_tokens: min(self.daily_tokens, other.daily_tokens),
            monthly_micro_usd: min(self.monthly_micro_usd, other.monthly_micro_usd),
        }
    }

    fn window_limits(&self) -> Limits {
        Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            ..Limits::default()
        }
    }
}

/// A meter's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Admitted: settle `lease` when the request ends.
    Go {
        /// The reservation to settle.
        lease: u64,
    },
    /// Over the per-minute rate: room again at `until_ms`.
    Rate {
        /// Earliest time this request would fit.
        until_ms: u64,
    },
    /// The day's tokens or the month's spend are used up until `until_ms` (the period's end).
    Budget {
        /// `daily_tokens` or `monthly_usd`.
        which: String,
        /// When the period ends.
        until_ms: u64,
    },
    /// The request alone is larger than the TPM or the daily token cap.
    TooLarge,
}

/// What one request really used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    /// Tokens (prompt + completion); None: unknown, keep the estimate.
    pub tokens: Option<u64>,
    /// Cost in millionths of a USD.
    pub micro_usd: u64,
    /// False when the request never reached an upstream: its reservation is freed.
    pub sent: bool,
}

/// Whether a request's settle may wait (up to `settle_wait_ms`) to ride with the isolate's
/// next call to the meter: a request that reached an upstream, under limits that count it
/// while it waits (its reservation holds its place in the minute's and the day's tokens). Not
/// under a monthly spend cap, which counts spend only once settled, nor for a request never
/// sent, whose settle gives room back.
pub fn settle_may_wait(limits: &MeterLimits, spent: &Spent) -> bool {
    spent.sent && limits.monthly_micro_usd.is_none()
}

/// How long a settle that may wait waits at most: half the short window (500 ms).
pub fn settle_wait_ms(spec: WindowSpec) -> u64 {
    spec.second_ms / 2
}

/// An open reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Open {
    at_ms: u64,
    tokens: u64,
    /// Dropped (its estimate kept) if never settled by then.
    expires_ms: u64,
}

/// Running totals, for the admin view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Requests admitted (and not given back unsent).
    pub admitted: u64,
    /// Refused for the per-minute rate.
    pub rate_limited: u64,
    /// Refused for an exhausted budget.
    pub over_budget: u64,
    /// Tokens settled.
    pub tokens: u64,
    /// Spend settled, millionths of a USD.
    pub micro_usd: u64,
}

impl Totals {
    /// As a bucket's counters, for the shared history rollups: admitted as admitted, refusals
    /// for the rate as `rate_limited`, for a budget as `denied`, tokens as `prompt_tokens`
    /// (a client's tokens are not split), spend as cost.
    fn as_counters(&self) -> Counters {
        Counters {
            admitted: self.admitted,
            rate_limited: self.rate_limited,
            denied: self.over_budget,
            prompt_tokens: self.tokens,
            cost_micro_usd: self.micro_usd,
            ..Counters::default()
        }
    }
}

/// The state of one meter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meter {
    windows: Windows,
    /// Open reservations by lease, oldest first.
    open: Vec<(u64, Open)>,
    next_lease: u64,
    /// UTC day number and the tokens settled in it.
    day: (u64, u64),
    /// Month number (year x 12 + month) and the spend settled in it.
    month: (u64, u64),
    totals: Totals,
    /// The open minute and day of its history (closed ones are stored by the object).
    history: History,
}

/// The live view of a meter against its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterView {
    /// The limits judged by.
    pub limits: MeterLimits,
    /// Requests in the last minute.
    pub minute_requests: u64,
    /// Tokens in the last minute (estimates for requests in flight).
    pub minute_tokens: u64,
    /// Tokens today (UTC), in flight included.
    pub day_tokens: u64,
    /// Spend this month (UTC), settled.
    pub month_usd: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Since the meter was created or reset.
    pub totals: Totals,
}

impl Meter {
    /// Admits a request of `est_tokens` now, or says why not.
    pub fn admit(
        &mut self,
        now_ms: u64,
        limits: &MeterLimits,
        spec: WindowSpec,
        est_tokens: u64,
        ttl_ms: u64,
    ) -> Verdict {
        self.tidy(now_ms, spec);
        if limits.tpm.is_some_and(|t| est_tokens > t)
            || limits.daily_tokens.is_some_and(|d| est_tokens > d)
        {
            return Verdict::TooLarge;
        }
        if let Some(cap) = limits.daily_tokens {
            if self.day_tokens().saturating_add(est_tokens) > cap {
                self.totals.over_budget += 1;
                return Verdict::Budget {
                    which: "daily_tokens".into(),
                    until_ms: (self.day.0 + 1).saturating_mul(DAY_MS),
                };
            }
        }
        if limits
            .monthly_micro_usd
            .is_some_and(|cap| self.month.1 >= cap)
        {
            self.totals.over_budget += 1;
            return Verdict::Budget {
                which: "monthly_usd".into(),
                until_ms: month_start_ms(self.month.0 + 1),
            };
        }
        let window = limits.window_limits();
        match self
            .windows
            .earliest_start(now_ms, &window, spec, est_tokens, 0)
        {
            Some(t) if t <= now_ms => {}
            Some(t) => {
                self.totals.rate_limited += 1;
                return Verdict::Rate { until_ms: t };
            }
            None => return Verdict::TooLarge,
        }
        self.windows.reserve(now_ms, est_tokens);
        let lease = self.next_lease;
        self.next_lease += 1;
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let open = Open {
            at_ms: now_ms,
            tokens: est_tokens,
            expires_ms,
        };
        self.open.push((lease, open));
        self.totals.admitted += 1;
        Verdict::Go { lease }
    }

    /// Settles `lease` with what it really used (at most once; unknown leases are ignored).
    pub fn settle(&mut self, now_ms: u64, spec: WindowSpec, lease: u64, spent: Spent) {
        self.tidy(now_ms, spec);
        let Some(i) = self.open.iter().position(|(l, _)| *l == lease) else {
            return;
        };
        let (_, open) = self.open.remove(i);
        if !spent.sent {
            self.windows.release(open.at_ms, open.tokens, None);
            self.totals.admitted = self.totals.admitted.saturating_sub(1);
            return;
        }
        let tokens = spent.tokens.unwrap_or(open.tokens);
        self.windows
            .reconcile(open.at_ms, open.tokens, None, tokens);
        self.day.1 = self.day.1.saturating_add(tokens);
        self.month.1 = self.month.1.saturating_add(spent.micro_usd);
        self.totals.tokens = self.totals.tokens.saturating_add(tokens);
        self.totals.micro_usd = self.totals.micro_usd.saturating_add(spent.micro_usd);
    }

    /// Forgets the period counters and totals (an operator's reset); requests in flight stay.
    pub fn reset(&mut self, now_ms: u64, spec: WindowSpec) {
        let open = std::mem::take(&mut self.open);
        *self = Meter {
            next_lease: self.next_lease,
            history: std::mem::take(&mut self.history),
            ..Meter::default()
        };
        for (_, o) in &open {
            self.windows.reserve(o.at_ms, o.tokens);
        }
        self.open = open;
        self.tidy(now_ms, spec);
    }

    /// The live view.
    pub fn view(&mut self, now_ms: u64, limits: MeterLimits, spec: WindowSpec) -> MeterView {
        self.tidy(now_ms, spec);
        let minute = self.windows.usage(now_ms, spec.minute_ms);
        MeterView {
            limits,
            minute_requests: minute.requests,
            minute_tokens: minute.tokens,
            day_tokens: self.day_tokens(),
            month_usd: self.month.1 as f64 / 1e6,
            in_flight: self.open.len() as u64,
            totals: self.totals,
        }
    }

    /// Settled tokens today plus the estimates in flight.
    fn day_tokens(&self) -> u64 {
        let open: u64 = self.open.iter().map(|(_, o)| o.tokens).sum();
        self.day.1.saturating_add(open)
    }

    /// Rolls the periods over, drops expired reservations, keeps the windows small.
    fn tidy(&mut self, now_ms: u64, spec: WindowSpec) {
        let day = now_ms / DAY_MS;
        if self.day.0 != day {
            self.day = (day, 0);
        }
        let month = month_of_day(day);
        if self.month.0 != month {
            self.month = (month, 0);
        }
        self.open.retain(|(_, o)| o.expires_ms > now_ms);
        self.windows.prune(now_ms, spec);
        self.windows.compact(now_ms, spec, 0, &[]);
    }
}

/// One call to a meter's Durable Object: the limits to judge by (the caller's config) and
/// what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterCall {
    /// The limits.
    pub limits: MeterLimits,
    /// Window lengths (compressed in tests).
    pub spec: WindowSpec,
    /// What to do.
    pub op: MeterOp,
}

/// What a call asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterOp {
    /// Admit a request of `est_tokens`; its reservation lapses after `ttl_ms` unsettled.
    Admit {
        /// Estimated tokens.
        est_tokens: u64,
        /// Reservation lifetime.
        ttl_ms: u64,
    },
    /// What a request used.
    Settle {
        /// Its lease.
        lease: u64,
        /// What it used.
        spent: Spent,
    },
    /// The live view.
    View,
    /// An operator's reset of the period counters, answered with the view.
    Reset,
    /// Several calls applied in order, answered with the last one's reply: settles nothing
    /// waits for, perhaps ahead of an admission that is waited for.
    Batch(Vec<MeterOp>),
    /// The history since minute number `minutes_from`: the open periods here; the object
    /// adds the stored ones.
    History {
        /// The first minute wanted.
        minutes_from: u64,
    },
}

/// A meter's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterReply {
    /// To `Admit`.
    Verdict(Verdict),
    /// To `View`, `Reset` and `Settle`.
    View(MeterView),
    /// To `History`: (minute, rollup) and (day, rollup), oldest first.
    History {
        /// Minutes.
        minutes: Vec<Period>,
        /// Days.
        days: Vec<Period>,
    },
}

impl Meter {
    /// Applies one call at `now_ms`.
    pub fn apply(&mut self, now_ms: u64, call: &MeterCall) -> MeterReply {
        let (limits, spec) = (call.limits, call.spec);
        if let MeterOp::View | MeterOp::History { .. } = call.op {
            // Reads record nothing, so they change nothing.
            return self.answer(now_ms, call);
        }
        let before = self.totals.as_counters();
        let reply = self.answer(now_ms, call);
        let used = self.windows.usage(now_ms, spec.minute_ms);
        let after = self.totals.as_counters();
        self.history
            .record(now_ms, &limits.window_limits(), (&before, &after), used);
        reply
    }

    /// The periods of its history closed since the last take, for the object to store.
    pub fn take_closed_history(&mut self) -> Closed {
        self.history.take_closed()
    }

    fn answer(&mut self, now_ms: u64, call: &MeterCall) -> MeterReply {
        let (limits, spec) = (call.limits, call.spec);
        match &call.op {
            MeterOp::Admit { est_tokens, ttl_ms } => {
                MeterReply::Verdict(self.admit(now_ms, &limits, spec, *est_tokens, *ttl_ms))
            }
            MeterOp::Settle { lease, spent } => {
                self.settle(now_ms, spec, *lease, *spent);
                MeterReply::View(self.view(now_ms, limits, spec))
            }
            MeterOp::Batch(ops) => {
                let Some((last, first)) = ops.split_last() else {
                    return MeterReply::View(self.view(now_ms, limits, spec));
                };
                for op in first {
                    match op {
                        // No view for a reply nobody reads.
                        MeterOp::Settle { lease, spent } => {
                            self.settle(now_ms, spec, *lease, *spent)
                        }
                        other => {
                            let one = MeterCall {
                                op: other.clone(),
                                ..*call
                            };
                            self.answer(now_ms, &one);
                        }
                    }
                }
                let last = MeterCall {
                    op: last.clone(),
                    ..*call
                };
                self.answer(now_ms, &last)
            }
            MeterOp::View => MeterReply::View(self.view(now_ms, limits, spec)),
            MeterOp::Reset => {
                self.reset(now_ms, spec);
                MeterReply::View(self.view(now_ms, limits, spec))
            }
            MeterOp::History { .. } => {
                let (minute, day) = self.history.open();
                MeterReply::History {
                    minutes: minute.into_iter().collect(),
                    days: day.into_iter().collect(),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "meter_tests.rs"]
mod tests;
