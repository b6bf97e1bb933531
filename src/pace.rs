//! How fast a bucket may send, beyond what its windows allow:
//!
//! - **even spacing**: sends are spread at the allowed rate (GCRA-style: the next slot is one
//!   interval after its neighbours; a request that finds no send within an interval goes at
//!   once, so the burst tolerance is one request), rather than filling a window and waiting;
//! - **slow start** (per upstream profile): the sends in any second may be at most `growth`
//!   times those of the second before, plus a floor (a fraction of the full rate, at least
//!   two), so a quiet bucket ramps up smoothly rather than jumping to its full rate, which
//!   trips upstream surge protection; the full rate is RPS, else RPM / 60;
//! - **surges**: a surge 429 holds the rate at what the second before it carried (the rate
//!   that was working) for two seconds, then the ramp resumes with a gentler growth that the
//!   bucket remembers (and relaxes back after a quiet minute);
//! - **margins**: the short and long windows are widened by the spread of how late recent
//!   sends reached the upstream relative to their slots (the last 64; 100 ms until 8 are in),
//!   so jitter between admission and arrival can never put more into an upstream window than
//!   its limit; a window-limit 429 the windows did not expect widens them a little more.
//!
//! Pure: time comes in as `now_ms`; state is a few numbers and 64 lag samples.

use crate::window::{Limits, WindowSpec, Windows};
use serde::{Deserialize, Serialize};

pub mod stall;

/// How fast a bucket's send rate may grow (config `upstreams.<id>.slow_start`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowStart {
    /// Sends per second allowed on top of `growth` times the second before, as a fraction of
    /// the full rate (so this is the rate from quiet).
    pub floor: f64,
    /// Largest growth of the send rate from one second to the next.
    pub growth: f64,
}

impl SlowStart {
    /// DashScope's default: from quiet three tenths of the full rate, then at most x1.5 a
    /// second (full rate in the fourth second). A fifth was tried first: with the sliding
    /// seconds' arithmetic that took five seconds and cost 3 % of a 90 s storm's capacity.
    pub const DASHSCOPE: SlowStart = SlowStart {
        floor: 0.3,
        growth: 1.5,
    };
    /// What a bucket of a profile without slow start learns from its first surge 429.
    pub const LEARNED: SlowStart = SlowStart::DASHSCOPE;
}

/// How far back pacing reads the windows, in (widened) short windows: the growth rule and a
/// surge look at the second before the current one. Entries older than that may be merged.
pub const LOOK_BACK_WINDOWS: u64 = 2;
/// Sends per short window always allowed under slow start, whatever the floor fraction.
const MIN_FLOOR: f64 = 2.0;
/// Lag samples kept, the newest.
const LAG_SAMPLES: usize = 64;
/// Until this many samples are in, the spread is taken to be at least...
const MIN_LAG_SAMPLES: usize = 8;
/// ...this much (a burst at a new bucket was seen to land up to ~40 ms apart under
/// `wrangler dev`), so the first sends are safe before anything is measured.
const UNMEASURED_SPREAD_MS: u64 = 100;
/// A surge 429 holds the rate at what was working for this many short windows.
const SURGE_HOLD_WINDOWS: u64 = 2;
/// Each surge 429 cuts the learned growth's excess over 1 by this factor...
const SURGE_GROWTH_CUT: f64 = 0.5;
/// ...but never below this growth.
const MIN_GROWTH: f64 = 1.1;
/// A learned growth relaxes halfway back toward the configured one after each quiet period
/// this long (in short windows: a minute); so does a learned margin.
const RELAX_WINDOWS: u64 = 60;
/// A window-limit 429 the windows did not expect widens them by this share of the short
/// window (a fiftieth: 20 ms)...
const SURPRISE_MARGIN_DIVISOR: u64 = 50;
/// ...up to this many such steps.
const MAX_SURPRISE_STEPS: u64 = 10;

/// What a bucket learned about pacing; persisted with its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// Growth learned from surge 429s (below the configured one), and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learned: Option<Learned>,
    /// After a surge 429: at most `per_window` sends per short window until `until_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold: Option<Hold>,
    /// How late recent sends left relative to their slots, in ms, newest last (negative when
    /// the sender's clock runs behind the bucket's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    lags: Vec<i64>,
    /// Margin learned from window-limit 429s the windows did not expect: jitter beyond what
    /// the lag samples caught. Halves after each quiet minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    surprise: Option<Surprise>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Surprise {
    extra_ms: u64,
    at_ms: u64,
    relaxed_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Learned {
    floor: f64,
    growth: f64,
    since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hold {
    per_window: u64,
    until_ms: u64,
}

/// The rule a send at some time must keep: at most `allowed` sends in the short window ending
/// there (itself included).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rule {
    floor: f64,
    growth: f64,
    hold: Option<(u64, u64)>,
    /// How much later than its slot a send may land (the widening): the second before is
    /// counted only where its sends surely land in the upstream's second before.
    spread_ms: u64,
}

impl Pace {
    /// The window lengths to judge by: the configured ones widened by the spread of recent
    /// send lateness (an arrival is its slot plus a lateness within that spread), and by what
    /// surprises taught.
    pub fn widened(&self, spec: WindowSpec) -> WindowSpec {
        let spread = self.widening_ms();
        WindowSpec {
            second_ms: spec.second_ms.saturating_add(spread),
            minute_ms: spec.minute_ms.saturating_add(spread),
        }
    }

    /// How much the windows are widened: the lateness spread plus what surprises taught.
    fn widening_ms(&self) -> u64 {
        let learned = self.surprise.as_ref().map_or(0, |s| s.extra_ms);
        self.lag_spread_ms().saturating_add(learned)
    }

    /// The spread of recent send lateness (max - min of the samples); at least
    /// `UNMEASURED_SPREAD_MS` until enough samples are in.
    pub fn lag_spread_ms(&self) -> u64 {
        let max = self.lags.iter().max();
        let min = self.lags.iter().min();
        let measured = match (max, min) {
            (Some(max), Some(min)) => u64::try_from(max.saturating_sub(*min)).unwrap_or(0),
            _ => 0,
        };
        if self.lags.len() < MIN_LAG_SAMPLES {
            measured.max(UNMEASURED_SPREAD_MS)
        } else {
            measured
        }
    }

    /// The end of the surge hold in force, if any.
    pub fn held_until(&self, now_ms: u64) -> Option<u64> {
        self.hold
            .as_ref()
            .map(|h| h.until_ms)
            .filter(|&u| u > now_ms)
    }

    /// Forgets what surges and surprises taught (an operator's clear); keeps the measurements.
    pub fn forget_lessons(&mut self) {
        self.learned = None;
        self.hold = None;
        self.surprise = None;
    }

    /// Records how late one send left (ms; negative: early on the bucket's clock).
    pub fn record_lag(&mut self, lag_ms: i64) {
        self.lags.push(lag_ms);
        if self.lags.len() > LAG_SAMPLES {
            self.lags.remove(0);
        }
    }

    /// The earliest start at or after `from` for a request of `tokens` that keeps the windows
    /// (`windows.earliest_start`) and this pacing; None when the request alone is too large.
    pub fn earliest_start(
        &self,
        windows: &Windows,
        from: u64,
        limits: &Limits,
        spec: WindowSpec,
        slow_start: Option<SlowStart>,
        tokens: u64,
    ) -> Option<u64> {
        let base_second_ms = spec.second_ms.max(1);
        let spec = self.widened(spec);
        let full = full_spacing(limits, spec);
        let per_window = full_per_window(limits, spec);
        let rule = self.rule(slow_start);
        let w = spec.second_ms.max(1);
        // Under a growth rule a send never goes before the last one scheduled: a gap left
        // earlier would fill at today's rate a second that was allowed less.
        let last = windows.entries().last().map(|e| e.at_ms);
        let mut at = match (rule, last) {
            (Some(_), Some(last)) => from.max(last),
            _ => from,
        };
        // Each round either returns or moves `at` past an entry: bounded by the entries.
        for _ in 0..=windows.len().saturating_add(1) {
            // The rate at the schedule's end: where a new request usually lands.
            let end = windows.entries().last().map_or(at, |e| e.at_ms.max(at));
            let spacing = match rule {
                Some(rule) => {
                    let allowed = rule.allowed(end, windows, base_second_ms, per_window);
                    full.max(w.div_ceil(allowed.max(1)))
                }
                None => full,
            };
            let t = windows.earliest_start(at, limits, spec, tokens, spacing)?;
            let Some(rule) = rule else {
                return Some(t);
            };
            // The rule itself, exactly, for the short window ending at t.
            let allowed = rule.allowed(t, windows, base_second_ms, per_window);
            let inside = windows.request_times(t.saturating_add(1).saturating_sub(w), t);
            let over = (inside.len() as u64 + 1).saturating_sub(allowed);
            if over == 0 {
                return Some(t);
            }
            // Wait until `over` of them have left the window.
            let leaves = inside
                .get(usize::try_from(over - 1).unwrap_or(usize::MAX))
                .map_or(t + 1, |a| a + w);
            at = leaves.max(t + 1);
        }
        None
    }

    /// A window-limit 429 (RPS, RPM, TPS, TPM) arrived while the bucket's own windows had room:
    /// sends bunched more than the samples showed. Widens the windows by a fiftieth of the
    /// short window (up to a fifth of it). Returns true when another came within the last
    /// minute: then the limit is real (someone else uses the account, or the minute is full)
    /// and the caller cools for the whole window.
    pub fn on_surprise(&mut self, now_ms: u64, spec: WindowSpec) -> bool {
        let step = (spec.second_ms / SURPRISE_MARGIN_DIVISOR).max(1);
        let recent = self
            .surprise
            .as_ref()
            .is_some_and(|s| now_ms.saturating_sub(s.at_ms) < spec.minute_ms);
        let extra = self.surprise.as_ref().map_or(0, |s| s.extra_ms);
        self.surprise = Some(Surprise {
            extra_ms: extra.saturating_add(step).min(step * MAX_SURPRISE_STEPS),
            at_ms: now_ms,
            relaxed_at_ms: now_ms,
        });
        recent
    }

    /// A surge 429 at `now_ms`: hold at the rate of the second before, and learn a gentler
    /// growth (remembered).
    pub fn on_surge(
        &mut self,
        now_ms: u64,
        spec: WindowSpec,
        slow_start: Option<SlowStart>,
        windows: &Windows,
    ) {
        let base = match (&self.learned, slow_start) {
            (Some(l), _) => SlowStart {
                floor: l.floor,
                growth: l.growth,
            },
            (None, configured) => configured.unwrap_or(SlowStart::LEARNED),
        };
        let w = self.widened(spec).second_ms.max(1);
        let working = now_ms
            .checked_sub(w)
            .map_or(0, |before| windows.usage(before, w).requests)
            .max(1);
        self.hold = Some(Hold {
            per_window: working,
            until_ms: now_ms.saturating_add(w.saturating_mul(SURGE_HOLD_WINDOWS)),
        });
        self.learned = Some(Learned {
            floor: base.floor,
            growth: (1.0 + (base.growth - 1.0) * SURGE_GROWTH_CUT).max(MIN_GROWTH),
            since_ms: now_ms,
        });
    }

    /// Housekeeping: an ended hold goes; a learned growth and margin relax back after quiet
    /// periods.
    pub fn tidy(&mut self, now_ms: u64, spec: WindowSpec, slow_start: Option<SlowStart>) {
        if self.hold.as_ref().is_some_and(|h| h.until_ms <= now_ms) {
            self.hold = None;
        }
        let period = spec.second_ms.max(1).saturating_mul(RELAX_WINDOWS);
        if let Some(s) = self.surprise.as_mut() {
            while s.extra_ms > 0 && now_ms.saturating_sub(s.relaxed_at_ms) >= period {
                s.extra_ms /= 2;
                s.relaxed_at_ms = s.relaxed_at_ms.saturating_add(period);
            }
            if s.extra_ms == 0 && now_ms.saturating_sub(s.at_ms) >= spec.minute_ms {
                self.surprise = None;
            }
        }
        if let Some(l) = self.learned.as_mut() {
            if now_ms.saturating_sub(l.since_ms) >= period {
                let target = slow_start.map_or(SlowStart::LEARNED.growth, |s| s.growth);
                l.growth += (target - l.growth) / 2.0;
                l.since_ms = now_ms;
                if target - l.growth < 0.01 {
                    self.learned = None;
                }
            }
        }
    }

    /// Sends allowed in the short window ending at `now_ms`, over the limits' full rate: the
    /// admin view's rate factor (1.0 when nothing slows the bucket).
    pub fn rate_factor(
        &self,
        now_ms: u64,
        windows: &Windows,
        limits: &Limits,
        spec: WindowSpec,
        slow_start: Option<SlowStart>,
    ) -> f64 {
        let base_second_ms = spec.second_ms.max(1);
        let per_window = full_per_window(limits, self.widened(spec));
        let (Some(rule), Some(full)) = (self.rule(slow_start), per_window) else {
            return 1.0;
        };
        let allowed = rule.allowed(now_ms, windows, base_second_ms, per_window);
        (allowed as f64 / full as f64).min(1.0)
    }

    /// The growth in force (learned, else configured), if any.
    pub fn growth(&self, slow_start: Option<SlowStart>) -> Option<f64> {
        self.rule(slow_start).map(|r| r.growth)
    }

    fn rule(&self, slow_start: Option<SlowStart>) -> Option<Rule> {
        let hold = self.hold.as_ref().map(|h| (h.per_window, h.until_ms));
        let base = match (&self.learned, slow_start) {
            (Some(l), _) => Some((l.floor, l.growth)),
            (None, Some(s)) => Some((s.floor, s.growth)),
            // A hold applies even to a bucket without slow start.
            (None, None) => hold.map(|_| (1.0, f64::INFINITY)),
        };
        base.map(|(floor, growth)| Rule {
            floor,
            growth,
            hold,
            spread_ms: self.widening_ms(),
        })
    }
}

impl Rule {
    /// Sends allowed in the (widened) short window ending at `at`, a new one included: `growth`
    /// times the second before plus the floor, at most the full rate, at most the hold. The
    /// upstream counts the second before its arrival, `second_ms` long; with every send landing
    /// up to `spread_ms` late, only slots in (at - 2 x second + spread, at - second - spread]
    /// surely land there, so only those count.
    fn allowed(
        &self,
        at: u64,
        windows: &Windows,
        second_ms: u64,
        full_per_window: Option<u64>,
    ) -> u64 {
        let full = full_per_window.unwrap_or(u64::MAX);
        let surely = second_ms.saturating_sub(self.spread_ms.saturating_mul(2));
        let before = at
            .checked_sub(second_ms.saturating_add(self.spread_ms))
            .filter(|_| surely > 0)
            .map_or(0, |then| windows.usage(then, surely).requests);
        let floor = full_per_window.map_or(MIN_FLOOR, |f| (self.floor * f as f64).max(MIN_FLOOR));
        let grown = floor + self.growth * before as f64;
        let mut allowed = if grown.is_finite() {
            (grown as u64).min(full)
        } else {
            full
        };
        if let Some((per_window, until)) = self.hold {
            if at < until {
                allowed = allowed.min(per_window);
            }
        }
        allowed.max(1)
    }
}

/// The even interval between sends: the short window over RPS (0 without an RPS limit: a
/// minute's budget may go in a burst, as RPM limits allow; slow start bounds such bursts).
pub fn full_spacing(limits: &Limits, spec: WindowSpec) -> u64 {
    limits.rps.map_or(0, |r| spec.second_ms / r.max(1))
}

/// The full rate in sends per short window under slow start: RPS, else RPM over the minute
/// (DashScope: "RPS = RPM / 60 may also apply") when that is at least one; None when nothing
/// bounds the short window (the growth rule alone then shapes bursts).
fn full_per_window(limits: &Limits, spec: WindowSpec) -> Option<u64> {
    let from_rpm = limits.rpm.and_then(|r| {
        let per_window =
            u128::from(r) * u128::from(spec.second_ms) / u128::from(spec.minute_ms.max(1));
        u64::try_from(per_window).ok().filter(|&n| n >= 1)
    });
    match (limits.rps, from_rpm) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How late a send reached the upstream relative to its slot, as far as the sender can tell:
/// how late it left, plus half the round trip the upstream did not spend processing (when it
/// says how long it spent), the usual estimate of the way out. Not the whole round trip:
/// measured against the simulator's arrival times at 30 requests/s (BENCHMARKS.md, issue 8),
/// the way back carries most of the round trip's outliers (up to 63 ms, the way out 20), and
/// counting it widened the windows by 27 ms on average where 20 held every window as well.
/// (A rare stall on the way out, 49 ms once, is beyond either: docs/design.md, "Clocks, margins and time compression".)
pub fn lag_ms(slot_ms: u64, sent_ms: u64, headers_ms: u64, processing_ms: Option<u64>) -> i64 {
    let left = i64::try_from(sent_ms).unwrap_or(i64::MAX) - i64::try_from(slot_ms).unwrap_or(0);
    let transit = processing_ms.map_or(0, |p| {
        let round_trip = headers_ms.saturating_sub(sent_ms);
        i64::try_from(round_trip.saturating_sub(p) / 2).unwrap_or(0)
    });
    left.saturating_add(transit)
}

#[cfg(test)]
#[path = "pace_tests.rs"]
mod tests;
