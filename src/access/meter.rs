//! One client's (or one user's) usage against its own limits: requests and tokens per minute,
//! tokens per UTC day, spend per UTC month. The state its Durable Object holds.
//!
//! Pure: time comes in as `now_ms`. The minute windows are `window::Windows` (constant size,
//! never admitting what an exact log would refuse). A request reserves its estimate until it
//! settles with what it really used; the day's tokens count reservations in flight, so the
//! daily cap holds exactly. Spend is known only after an answer, so the monthly cap admits
//! while the settled spend is under it: it can be passed by the requests in flight when it
//! is reached, never by more.
//!
//! While a meter has ample room it hands the asking isolate a credit beside an admission
//! (`bucket::credit`: admissions spent with no round trip, counted in the windows over the
//! credit's whole life, each a quarter of the room left, in the day's tokens too), so a client
//! with limits costs no awaited call per request either. None under a monthly spend cap: spend
//! counts only once settled, and credits would widen what the requests in flight may pass it by.

use crate::bucket::credit::{self, Credit};
use crate::bucket::lease::{unsettled, unsettled_bit};
use crate::bucket::Counters;
use crate::calendar::{month_of_day, month_start_ms, DAY_MS};
use crate::history::{Closed, History, Period};
use crate::window::{Limits, MinuteUse, WindowSpec, Windows};
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

    /// True when it caps the day's tokens or the month's spend.
    pub fn has_budget(&self) -> bool {
        self.daily_tokens.is_some() || self.monthly_micro_usd.is_some()
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
        /// Admissions handed out ahead beside it, if asked and the meter has ample room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<Credit>,
        /// Not before then: the first time with room, within the ask's `max_wait_ms` (None:
        /// now). The request is counted then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<u64>,
        /// The minute then, this request (and the credit) counted: the client's room left.
        #[serde(default)]
        minute_use: MinuteUse,
    },
    /// Over the per-minute rate: room again at `until_ms`.
    Rate {
        /// Earliest time this request would fit.
        until_ms: u64,
        /// The minute now.
        #[serde(default)]
        minute_use: MinuteUse,
        /// Credits handed out are open (`Meter::credits_open`): not counted as a refusal here.
        #[serde(default, skip_serializing_if = "is_false")]
        credits_open: bool,
    },
    /// The day's tokens or the month's spend are used up until `until_ms` (the period's end).
    Budget {
        /// `daily_tokens` or `monthly_usd`.
        which: String,
        /// When the period ends.
        until_ms: u64,
        /// As for `Rate`.
        #[serde(default, skip_serializing_if = "is_false")]
        credits_open: bool,
    },
    /// The request alone is larger than the TPM or the daily token cap.
    TooLarge,
}

impl Verdict {
    /// A refusal the meter left uncounted (`credits_open`): whether it is over a budget (else
    /// the rate), for the isolate to count (`MeterOp::Refused`) if it does refuse.
    pub fn uncounted(&self) -> Option<bool> {
        match self {
            Verdict::Rate {
                credits_open: true, ..
            } => Some(false),
            Verdict::Budget {
                credits_open: true, ..
            } => Some(true),
            _ => None,
        }
    }
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

/// An open reservation: one request's, or a credit's admissions (ids from its lease on),
/// settled one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Open {
    at_ms: u64,
    /// Tokens each admission holds (the estimate until settled).
    tokens: u64,
    /// Dropped (its estimate kept) if never settled by then.
    expires_ms: u64,
    /// Admissions in it: 1, or a credit's.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    count: u64,
    /// Which are settled (bit i: lease + i).
    #[serde(default, skip_serializing_if = "is_zero")]
    settled: u64,
    /// A credit's: spendable until then (its span in the windows is `at_ms..=until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credit_until_ms: Option<u64>,
}

impl Open {
    /// Admissions not settled yet.
    fn unsettled(&self) -> u64 {
        unsettled(self.count, self.settled)
    }

    /// Tokens it holds: each unsettled admission's estimate.
    fn held_tokens(&self) -> u64 {
        self.tokens.saturating_mul(self.unsettled())
    }
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Running totals, for the admin view: a request admitted when the meter admits it, or, spent
/// from a credit, when it settles.
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
    /// Of the admitted, those spent from credits (no call to the meter).
    pub credited: u64,
    /// Of the admitted, those given a later slot (they waited for room in the limits)...
    pub scheduled: u64,
    /// ...and how long they were told to wait, summed (ms).
    pub wait_ms: u64,
}

impl Totals {
    /// As a bucket's counters, for the shared history rollups: admitted, scheduled and their
    /// waits as they are, refusals for the rate as `rate_limited`, for a budget as `denied`,
    /// tokens as `prompt_tokens` (a client's tokens are not split), spend as cost.
    fn as_counters(&self) -> Counters {
        Counters {
            admitted: self.admitted,
            rate_limited: self.rate_limited,
            denied: self.over_budget,
            prompt_tokens: self.tokens,
            cost_micro_usd: self.micro_usd,
            credited: self.credited,
            scheduled: self.scheduled,
            wait_ms: self.wait_ms,
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
    /// What its operator has been told of the daily budget: the period's end and how far
    /// (`Level as u64`; `Meter::budget_news`). Two numbers, as `day`, for the bundle's sake.
    told_day: (u64, u64),
    /// The same of the monthly budget.
    told_month: (u64, u64),
}

/// How far a budget has gone in its period (in order: stored as its number).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Level {
    /// Under `LOW_SHARE` used.
    #[default]
    Room,
    /// `LOW_SHARE` of it used, or more.
    Low,
    /// A request refused for it.
    Spent,
}

/// The share of a budget used from which its operator is told it runs low.
pub const LOW_SHARE: f64 = 0.8;

/// What an operator is told of a client's budget: which, how far, how much of it is used
/// (tokens, or millionths of a USD), and when its period ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetNews {
    /// `daily_tokens` or `monthly_usd`.
    pub which: &'static str,
    /// `Low` or `Spent`.
    pub level: Level,
    /// Used so far in the period (the day's tokens count requests in flight; the month's
    /// spend is settled).
    pub used: u64,
    /// Its limit, in the same unit.
    pub limit: u64,
    /// When the period ends.
    pub until_ms: u64,
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
    /// Requests in flight (with the admissions of credits handed out and not yet spent).
    pub in_flight: u64,
    /// Since the meter was created or reset.
    pub totals: Totals,
}

/// A caller's own usage, as `GET /v1/usage` answers it: its limits (a user token's, narrowed
/// by its client; a client key's, its client's) and what its meter counts against them now.
/// No running totals and nothing of other callers: a user sees its own meter only. Without
/// limits of its own a caller is not metered: `limits` is empty and nothing is counted.
#[derive(Debug, Serialize)]
pub struct CallerUsage<'a> {
    object: &'static str,
    client: &'a str,
    user: Option<&'a str>,
    limits: CallerLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    minute_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minute_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    day_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    month_usd: Option<f64>,
}

/// A caller's limits as it is told them: the monthly budget in USD, as its spend.
#[derive(Debug, Default, Serialize)]
struct CallerLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    rpm: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tpm: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daily_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monthly_usd: Option<f64>,
}

impl<'a> CallerUsage<'a> {
    /// The answer for `client` (and its `user`), from its meter's `view` (None: not metered).
    pub fn new(client: &'a str, user: Option<&'a str>, view: Option<&MeterView>) -> Self {
        CallerUsage {
            object: "gateway.usage",
            client,
            user,
            limits: view.map_or_else(CallerLimits::default, |v| CallerLimits {
                rpm: v.limits.rpm,
                tpm: v.limits.tpm,
                daily_tokens: v.limits.daily_tokens,
                monthly_usd: v.limits.monthly_micro_usd.map(|m| m as f64 / 1e6),
            }),
            minute_requests: view.map(|v| v.minute_requests),
            minute_tokens: view.map(|v| v.minute_tokens),
            day_tokens: view.map(|v| v.day_tokens),
            month_usd: view.map(|v| v.month_usd),
        }
    }
}

/// What an admission asks: a request's estimated tokens, how long its reservation lasts
/// unsettled, and the most admissions the asker would take ahead in a credit (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    /// Estimated tokens.
    pub est_tokens: u64,
    /// Reservation lifetime.
    pub ttl_ms: u64,
    /// Most admissions of a credit handed out beside it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub credit_max: u64,
    /// How long the request may wait for room in the minute windows (the client's
    /// `x-gateway-max-wait-ms`, or its model's wait): within it, a request over the rate is
    /// given the first slot with room instead of a refusal.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_wait_ms: u64,
}

impl Meter {
    /// Admits a request now (with a credit beside it when asked and the meter has ample
    /// room), or at the first time the minute windows have room if that is within the ask's
    /// `max_wait_ms` (counted then, with no credit), or says why not.
    pub fn admit(
        &mut self,
        now_ms: u64,
        limits: &MeterLimits,
        spec: WindowSpec,
        ask: Ask,
    ) -> Verdict {
        self.tidy(now_ms, spec);
        let at_ms = match self.refusal(now_ms, limits, spec, ask.est_tokens) {
            None => now_ms,
            Some(Verdict::Rate { until_ms, .. })
                if until_ms.saturating_sub(now_ms) <= ask.max_wait_ms =>
            {
                until_ms
            }
            Some(refusal) => return self.refuse(now_ms, refusal),
        };
        self.windows.reserve(at_ms, ask.est_tokens);
        let lease = self.record(at_ms, ask.est_tokens, ask.ttl_ms, 1, None);
        self.totals.admitted += 1;
        if at_ms > now_ms {
            self.totals.scheduled += 1;
            self.totals.wait_ms = self.totals.wait_ms.saturating_add(at_ms - now_ms);
            return Verdict::Go {
                lease,
                credit: None,
                at_ms: Some(at_ms),
                minute_use: self.windows.minute_use(at_ms, spec),
            };
        }
        let credit = self.grant(now_ms, limits, spec, ask);
        Verdict::Go {
            lease,
            credit,
            at_ms: None,
            minute_use: self.windows.minute_use(now_ms, spec),
        }
    }

    /// A refusal, counted unless credits handed out may still serve it (`credits_open`).
    fn refuse(&mut self, now_ms: u64, mut refusal: Verdict) -> Verdict {
        let open = self.credits_open(now_ms);
        match &mut refusal {
            Verdict::Rate { credits_open, .. } | Verdict::Budget { credits_open, .. } if open => {
                *credits_open = true
            }
            Verdict::Rate { .. } => self.refused(false),
            Verdict::Budget { .. } => self.refused(true),
            _ => {}
        }
        refusal
    }

    /// A credit asked ahead of need, beside no request (the asking isolate's is nearly spent),
    /// on the terms of one beside an admission: a request of its size would be admitted now.
    pub fn grant_ahead(
        &mut self,
        now_ms: u64,
        limits: &MeterLimits,
        spec: WindowSpec,
        ask: Ask,
    ) -> Option<Credit> {
        self.tidy(now_ms, spec);
        if self.refusal(now_ms, limits, spec, ask.est_tokens).is_some() {
            return None;
        }
        self.grant(now_ms, limits, spec, ask)
    }

    /// Whether a credit handed out may still have admissions to spend: a request refused now
    /// may then be served from one by the isolate holding it, so the refusal is counted only
    /// when that isolate says it refused (`MeterOp::Refused`).
    fn credits_open(&self, now_ms: u64) -> bool {
        (self.open.iter())
            .any(|(_, o)| o.credit_until_ms.is_some_and(|u| u >= now_ms) && o.unsettled() > 0)
    }

    /// A refusal an isolate gave (it held no credit to serve it from), counted.
    pub fn refused(&mut self, over_budget: bool) {
        match over_budget {
            true => self.totals.over_budget += 1,
            false => self.totals.rate_limited += 1,
        }
    }

    /// Why a request of `est_tokens` may not go now, if it may not.
    fn refusal(
        &self,
        now_ms: u64,
        limits: &MeterLimits,
        spec: WindowSpec,
        est_tokens: u64,
    ) -> Option<Verdict> {
        if limits.tpm.is_some_and(|t| est_tokens > t)
            || limits.daily_tokens.is_some_and(|d| est_tokens > d)
        {
            return Some(Verdict::TooLarge);
        }
        if let Some(cap) = limits.daily_tokens {
            if self.day_tokens().saturating_add(est_tokens) > cap {
                return Some(Verdict::Budget {
                    which: "daily_tokens".into(),
                    until_ms: (self.day.0 + 1).saturating_mul(DAY_MS),
                    credits_open: false,
                });
            }
        }
        if limits
            .monthly_micro_usd
            .is_some_and(|cap| self.month.1 >= cap)
        {
            return Some(Verdict::Budget {
                which: "monthly_usd".into(),
                until_ms: month_start_ms(self.month.0 + 1),
                credits_open: false,
            });
        }
        let window = limits.window_limits();
        match self
            .windows
            .earliest_start(now_ms, &window, spec, est_tokens, 0)
        {
            Some(t) if t <= now_ms => None,
            Some(t) => Some(Verdict::Rate {
                until_ms: t,
                minute_use: self.windows.minute_use(now_ms, spec),
                credits_open: false,
            }),
            None => Some(Verdict::TooLarge),
        }
    }

    /// Hands out a credit of admissions of the ask's size, counted from now to its end: at
    /// most `credit_max` and a quarter of the room every window and the day's tokens have left
    /// once a request of that size is counted (`credit::size`). None under a monthly spend
    /// cap, or when that leaves none.
    fn grant(
        &mut self,
        now_ms: u64,
        limits: &MeterLimits,
        spec: WindowSpec,
        ask: Ask,
    ) -> Option<Credit> {
        if limits.monthly_micro_usd.is_some() {
            return None;
        }
        let tokens = ask.est_tokens;
        let window = limits.window_limits();
        let by_windows = credit::size(&self.windows, now_ms, &window, spec, tokens, ask.credit_max);
        let by_day = limits.daily_tokens.map_or(u64::MAX, |cap| {
            let counted = self.day_tokens().saturating_add(tokens);
            credit::share_of(cap.saturating_sub(counted), tokens)
        });
        let count = by_windows.min(by_day);
        if count == 0 {
            return None;
        }
        let until_ms = now_ms.saturating_add(credit::life_ms(spec));
        let ttl_ms = credit::life_ms(spec).saturating_add(ask.ttl_ms);
        let first_lease = self.record(now_ms, tokens, ttl_ms, count, Some(until_ms));
        self.windows.reserve_credit(
            first_lease,
            (now_ms, until_ms),
            count,
            tokens.saturating_mul(count),
        );
        Some(Credit {
            first_lease,
            count,
            tokens,
            until_ms,
            late_ms: 0,
            spent: 0,
        })
    }

    /// Opens `count` leases (ids from the one returned) of `tokens` each at `at_ms`, for
    /// `ttl_ms`; a credit's when `credit_until_ms`.
    fn record(
        &mut self,
        at_ms: u64,
        tokens: u64,
        ttl_ms: u64,
        count: u64,
        credit_until_ms: Option<u64>,
    ) -> u64 {
        let lease = self.next_lease;
        self.next_lease = self.next_lease.saturating_add(count);
        let open = Open {
            at_ms,
            tokens,
            expires_ms: at_ms.saturating_add(ttl_ms),
            count,
            settled: 0,
            credit_until_ms,
        };
        self.open.push((lease, open));
        lease
    }

    /// Settles `lease` with what it really used (at most once; unknown leases are ignored).
    /// A credit's admission never spent comes back as not sent.
    pub fn settle(&mut self, now_ms: u64, spec: WindowSpec, lease: u64, spent: Spent) {
        self.tidy(now_ms, spec);
        let found = self
            .open
            .iter_mut()
            .enumerate()
            .find_map(|(i, (first, open))| {
                let bit = unsettled_bit((*first, open.count), open.settled, lease)?;
                open.settled |= bit;
                Some((i, *first, *open))
            });
        let Some((i, first, open)) = found else {
            return;
        };
        if open.unsettled() == 0 {
            self.open.remove(i);
        }
        let credit = open.credit_until_ms.map(|_| first);
        if !spent.sent {
            self.windows.release(open.at_ms, open.tokens, credit);
            if credit.is_none() {
                self.totals.admitted = self.totals.admitted.saturating_sub(1);
            }
            return;
        }
        if credit.is_some() {
            // A credit's admissions count as admitted once used.
            self.totals.admitted += 1;
            self.totals.credited += 1;
        }
        let tokens = spent.tokens.unwrap_or(open.tokens);
        self.windows
            .reconcile(open.at_ms, open.tokens, credit, tokens);
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
        for (first, o) in &open {
            match o.credit_until_ms {
                Some(until) => {
                    let span = (o.at_ms, until);
                    let tokens = o.held_tokens();
                    self.windows
                        .reserve_credit(*first, span, o.unsettled(), tokens);
                }
                None => self.windows.reserve(o.at_ms, o.tokens),
            }
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
            in_flight: self.open.iter().map(|(_, o)| o.unsettled()).sum(),
            totals: self.totals,
        }
    }

    /// Settled tokens today plus the estimates in flight.
    fn day_tokens(&self) -> u64 {
        let open: u64 = self.open.iter().map(|(_, o)| o.held_tokens()).sum();
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
        let credits: Vec<u64> = (self.open.iter())
            .filter_map(|(first, o)| o.credit_until_ms.map(|_| *first))
            .collect();
        self.windows.compact(now_ms, spec, 0, &credits);
    }
}

/// One call to a meter's Durable Object: the limits to judge by (the caller's config) and
/// what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterCall {
    /// The client, on calls to its own meter when it has a budget (none for a user's): named
    /// in the alert when the budget runs low or is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
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
    /// Admit a request; its reservation lapses after `ttl_ms` unsettled.
    Admit(Ask),
    /// A credit ahead of need (`Meter::grant_ahead`), answered `Granted`.
    Grant(Ask),
    /// An isolate refused a request the meter left uncounted (`credits_open`): over a budget,
    /// or over the rate.
    Refused {
        /// Over a budget (else the rate).
        over_budget: bool,
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
    /// To `Grant`: a credit, if the meter has ample room.
    Granted(Option<Credit>),
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

    /// What its operator has not been told yet about its budgets, told from now on: spent
    /// (`verdict` a refusal for one), else run low (`LOW_SHARE` used), each at most once a
    /// period and never low after spent.
    pub fn budget_news(
        &mut self,
        now_ms: u64,
        limits: &MeterLimits,
        verdict: Option<&Verdict>,
    ) -> Vec<BudgetNews> {
        let daily = limits.daily_tokens.map(|limit| BudgetNews {
            which: "daily_tokens",
            level: Level::Room,
            used: self.day_tokens(),
            limit,
            until_ms: (self.day.0 + 1).saturating_mul(DAY_MS),
        });
        let monthly = limits.monthly_micro_usd.map(|limit| BudgetNews {
            which: "monthly_usd",
            level: Level::Room,
            used: self.month.1,
            limit,
            until_ms: month_start_ms(self.month.0 + 1),
        });
        let spent = match verdict {
            Some(Verdict::Budget { which, .. }) => Some(which.as_str()),
            _ => None,
        };
        let mut out = Vec::new();
        for (told, budget) in [(&mut self.told_day, daily), (&mut self.told_month, monthly)] {
            let Some(mut news) = budget.filter(|b| b.until_ms > now_ms) else {
                continue;
            };
            news.level = if spent == Some(news.which) {
                Level::Spent
            } else if news.used as f64 >= news.limit as f64 * LOW_SHARE {
                Level::Low
            } else {
                continue;
            };
            let known = if told.0 == news.until_ms { told.1 } else { 0 };
            if news.level as u64 > known {
                *told = (news.until_ms, news.level as u64);
                out.push(news);
            }
        }
        out
    }

    /// The periods of its history closed since the last take, for the object to store.
    pub fn take_closed_history(&mut self) -> Closed {
        self.history.take_closed()
    }

    fn answer(&mut self, now_ms: u64, call: &MeterCall) -> MeterReply {
        let (limits, spec) = (call.limits, call.spec);
        match &call.op {
            MeterOp::Admit(ask) => MeterReply::Verdict(self.admit(now_ms, &limits, spec, *ask)),
            MeterOp::Grant(ask) => {
                MeterReply::Granted(self.grant_ahead(now_ms, &limits, spec, *ask))
            }
            MeterOp::Refused { over_budget } => {
                self.refused(*over_budget);
                MeterReply::View(self.view(now_ms, limits, spec))
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
                                client: None,
                                ..*call
                            };
                            self.answer(now_ms, &one);
                        }
                    }
                }
                let last = MeterCall {
                    op: last.clone(),
                    client: None,
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
