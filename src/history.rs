//! A bucket's history: what happened per minute (kept 24 hours) and per UTC day (kept 90
//! days), the evidence a provider's quota-increase form asks for.
//!
//! Pure: time comes in as `now_ms`. The open minute and day are `Rollup`s updated on every
//! call from the change in the bucket's running counters and its window use; when one closes
//! it is handed to the caller to store (one row per period, so storage stays bounded by the
//! retention: 1,440 minutes and 90 days), and a closing day is summarised from its minutes
//! (p95 RPM and TPM, minutes at the limit).

use crate::bucket::Counters;
use crate::window::{Limits, Used};
use serde::{Deserialize, Serialize};

/// Minute rollups kept.
pub const MINUTES_KEPT: u64 = 24 * 60;
/// Day rollups kept.
pub const DAYS_KEPT: u64 = 90;
const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// A minute whose peak use reaches this share of a limit counts as at the limit.
const AT_LIMIT: f64 = 0.95;

/// What happened in one period (zeros are not written: the state carries two of these).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollup {
    /// Requests given a slot (now or scheduled).
    #[serde(skip_serializing_if = "is_zero")]
    pub admitted: u64,
    /// Of those, given a slot in the future...
    #[serde(skip_serializing_if = "is_zero")]
    pub scheduled: u64,
    /// ...and how long they were told to wait, summed (ms).
    #[serde(skip_serializing_if = "is_zero")]
    pub wait_ms: u64,
    /// Requests turned away (they went to another account or down the chain, or were refused).
    #[serde(skip_serializing_if = "is_zero")]
    pub denied: u64,
    /// Served.
    #[serde(skip_serializing_if = "is_zero")]
    pub ok: u64,
    /// Failed upstream without a limit signal (5xx, network).
    #[serde(skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Upstream 429s for a window limit (requests, tokens), absorbed by the gateway.
    #[serde(skip_serializing_if = "is_zero")]
    pub rate_limited: u64,
    /// Of those, for a token limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub rate_limited_tokens: u64,
    /// Upstream 429s of surge protection.
    #[serde(skip_serializing_if = "is_zero")]
    pub burst: u64,
    /// Times parked (hard failures: quota exhausted, billing, revoked keys).
    #[serde(skip_serializing_if = "is_zero")]
    pub parked: u64,
    /// 429s answered to clients for want of capacity, this bucket first choice.
    #[serde(skip_serializing_if = "is_zero")]
    pub passed_429: u64,
    /// Requests meant for this model served by a lower one.
    #[serde(skip_serializing_if = "is_zero")]
    pub downgraded: u64,
    /// What those downgrades saved against this model's price (millionths of a USD)...
    #[serde(skip_serializing_if = "is_zero")]
    pub downgrade_saved_micro_usd: u64,
    /// ...or cost more.
    #[serde(skip_serializing_if = "is_zero")]
    pub downgrade_lost_micro_usd: u64,
    /// Prompt tokens the upstream reported.
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_tokens: u64,
    /// Of those, read from the upstream's prompt cache.
    #[serde(skip_serializing_if = "is_zero")]
    pub cached_tokens: u64,
    /// Completion tokens.
    #[serde(skip_serializing_if = "is_zero")]
    pub completion_tokens: u64,
    /// Cost, millionths of a USD.
    #[serde(skip_serializing_if = "is_zero")]
    pub cost_micro_usd: u64,
    /// Most requests seen in one minute window (sliding) during the period.
    #[serde(skip_serializing_if = "is_zero")]
    pub peak_rpm: u64,
    /// Most tokens seen in one minute window.
    #[serde(skip_serializing_if = "is_zero")]
    pub peak_tpm: u64,
    /// Days only: the 95th percentile of the minutes' peak RPM and TPM, and how many minutes
    /// were at a limit. Minutes only: whether it was at a limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub p95_rpm: u64,
    /// See `p95_rpm`.
    #[serde(skip_serializing_if = "is_zero")]
    pub p95_tpm: u64,
    /// See `p95_rpm`.
    #[serde(skip_serializing_if = "is_zero")]
    pub minutes_at_limit: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Rollup {
    /// Adds what the counters say happened between `before` and `after`.
    pub fn add_change(&mut self, before: &Counters, after: &Counters) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.admitted += d(before.admitted, after.admitted);
        self.scheduled += d(before.scheduled, after.scheduled);
        self.wait_ms += d(before.wait_ms, after.wait_ms);
        self.denied += d(before.denied, after.denied);
        self.ok += d(before.ok, after.ok);
        self.failed += d(before.failed, after.failed);
        self.rate_limited += d(before.rate_limited, after.rate_limited);
        self.rate_limited_tokens += d(before.rate_limited_tokens, after.rate_limited_tokens);
        self.burst += d(before.burst, after.burst);
        self.parked += d(before.parked, after.parked);
        self.passed_429 += d(before.passed_429, after.passed_429);
        self.downgraded += d(before.downgraded, after.downgraded);
        self.downgrade_saved_micro_usd += d(
            before.downgrade_saved_micro_usd,
            after.downgrade_saved_micro_usd,
        );
        self.downgrade_lost_micro_usd += d(
            before.downgrade_lost_micro_usd,
            after.downgrade_lost_micro_usd,
        );
        self.prompt_tokens += d(before.prompt_tokens, after.prompt_tokens);
        self.cached_tokens += d(before.cached_tokens, after.cached_tokens);
        self.completion_tokens += d(before.completion_tokens, after.completion_tokens);
        self.cost_micro_usd += d(before.cost_micro_usd, after.cost_micro_usd);
    }

    /// Notes the minute window's use now.
    pub fn saw(&mut self, used_minute: Used) {
        self.peak_rpm = self.peak_rpm.max(used_minute.requests);
        self.peak_tpm = self.peak_tpm.max(used_minute.tokens);
    }

    /// Whether this minute's peak reached a limit.
    fn reached(&self, limits: &Limits) -> bool {
        let near = |peak: u64, limit: Option<u64>| {
            limit.is_some_and(|l| peak as f64 >= AT_LIMIT * l as f64)
        };
        near(self.peak_rpm, limits.rpm) || near(self.peak_tpm, limits.tpm)
    }

    /// Adds another period's counts into this one (peaks: the larger).
    pub fn merge(&mut self, other: &Rollup) {
        let before = Counters::default();
        self.add_change(&before, &other.as_counters());
        self.peak_rpm = self.peak_rpm.max(other.peak_rpm);
        self.peak_tpm = self.peak_tpm.max(other.peak_tpm);
        self.minutes_at_limit += other.minutes_at_limit;
    }

    fn as_counters(&self) -> Counters {
        Counters {
            admitted: self.admitted,
            scheduled: self.scheduled,
            wait_ms: self.wait_ms,
            denied: self.denied,
            ok: self.ok,
            failed: self.failed,
            rate_limited: self.rate_limited,
            rate_limited_tokens: self.rate_limited_tokens,
            burst: self.burst,
            parked: self.parked,
            passed_429: self.passed_429,
            downgraded: self.downgraded,
            downgrade_saved_micro_usd: self.downgrade_saved_micro_usd,
            downgrade_lost_micro_usd: self.downgrade_lost_micro_usd,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            completion_tokens: self.completion_tokens,
            cost_micro_usd: self.cost_micro_usd,
            ..Counters::default()
        }
    }
}

/// A period's number (minutes or days since the epoch) and what happened in it.
pub type Period = (u64, Rollup);

/// The open periods of a bucket, and those closed since the caller last took them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// The open minute: its number (ms / 60,000) and rollup.
    #[serde(skip_serializing_if = "Option::is_none")]
    minute: Option<Period>,
    /// The open UTC day: its number and rollup (minutes already closed, merged in).
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<Period>,
    /// Closed minutes and days not yet stored.
    #[serde(skip_serializing_if = "Closed::is_empty")]
    closed: Closed,
}

/// Periods that closed: to be stored by the caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Closed {
    /// (minute number, rollup).
    pub minutes: Vec<Period>,
    /// (day number, rollup without its minute summary: see `summarise_day`).
    pub days: Vec<Period>,
}

impl Closed {
    fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.days.is_empty()
    }
}

impl History {
    /// Records a call at `now_ms`: the counters' change and the minute window's use after it.
    pub fn record(
        &mut self,
        now_ms: u64,
        limits: &Limits,
        change: (&Counters, &Counters),
        used: Used,
    ) {
        let (minute, day) = (now_ms / MINUTE_MS, now_ms / DAY_MS);
        if self.minute.as_ref().is_some_and(|(m, _)| *m != minute) {
            self.close_minute(limits);
        }
        if self.day.as_ref().is_some_and(|(d, _)| *d != day) {
            if let Some(closed) = self.day.take() {
                self.closed.days.push(closed);
            }
        }
        let (_, open) = self
            .minute
            .get_or_insert_with(|| (minute, Rollup::default()));
        open.add_change(change.0, change.1);
        open.saw(used);
        self.day.get_or_insert_with(|| (day, Rollup::default()));
    }

    fn close_minute(&mut self, limits: &Limits) {
        let Some((m, mut rollup)) = self.minute.take() else {
            return;
        };
        rollup.minutes_at_limit = u64::from(rollup.reached(limits));
        let day = m * MINUTE_MS / DAY_MS;
        match &mut self.day {
            Some((d, open)) if *d == day => open.merge(&rollup),
            _ => {
                if let Some(closed) = self.day.take() {
                    self.closed.days.push(closed);
                }
                let mut open = Rollup::default();
                open.merge(&rollup);
                self.day = Some((day, open));
            }
        }
        self.closed.minutes.push((m, rollup));
    }

    /// Takes the periods closed since the last call.
    pub fn take_closed(&mut self) -> Closed {
        std::mem::take(&mut self.closed)
    }

    /// The open minute and day as they stand (the day including the open minute).
    pub fn open(&self) -> (Option<Period>, Option<Period>) {
        let mut day = self.day.clone();
        if let (Some((_, d)), Some((_, m))) = (&mut day, &self.minute) {
            d.merge(m);
        }
        (self.minute.clone(), day)
    }
}

/// A closed day's summary from its minutes: p95 of the minutes' peak RPM and TPM (minutes
/// with no traffic count as 0), and the minutes at a limit.
pub fn summarise_day(day: &mut Rollup, minutes: &[Rollup]) {
    let p95 = |mut v: Vec<u64>| {
        v.resize(v.len().max(MINUTES_KEPT as usize), 0);
        v.sort_unstable();
        let i = (v.len() * 95).div_ceil(100).saturating_sub(1);
        v.get(i).copied().unwrap_or(0)
    };
    day.p95_rpm = p95(minutes.iter().map(|m| m.peak_rpm).collect());
    day.p95_tpm = p95(minutes.iter().map(|m| m.peak_tpm).collect());
    day.minutes_at_limit = minutes.iter().map(|m| m.minutes_at_limit).sum();
}

/// The first minute number of a day, and the day of a minute.
pub fn day_minutes(day: u64) -> (u64, u64) {
    let first = day * (DAY_MS / MINUTE_MS);
    (first, first + DAY_MS / MINUTE_MS)
}

/// The oldest minute and day to keep at `now_ms`.
pub fn horizon(now_ms: u64) -> (u64, u64) {
    let minute = (now_ms / MINUTE_MS).saturating_sub(MINUTES_KEPT);
    let day = (now_ms / DAY_MS).saturating_sub(DAYS_KEPT);
    (minute, day)
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
