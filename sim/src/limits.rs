//! Sliding-window limiter of one account x model on simulated time, with peak accounting.

use std::collections::VecDeque;

use serde::Serialize;

use crate::clock::{MINUTE_NS, SECOND_NS};
use crate::config::Limits;

/// Which limit refused a request, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Surge protection (`limit_burst_rate`).
    Burst,
    /// Requests per second.
    Rps,
    /// Requests per minute.
    Rpm,
    /// Tokens per second.
    Tps,
    /// Tokens per minute.
    Tpm,
}

impl LimitKind {
    /// Whether the limit counts tokens rather than requests.
    pub fn is_tokens(self) -> bool {
        matches!(self, LimitKind::Tps | LimitKind::Tpm)
    }
}

/// Why a request was refused and when it could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that was full.
    pub kind: LimitKind,
    /// Its configured value.
    pub limit: u64,
    /// Requests or tokens already in its window.
    pub used: u64,
    /// Requests (1) or prompt tokens this request asked for.
    pub requested: u64,
    /// Simulated time until the window has room for this request.
    pub wait_ns: u64,
}

/// State of one `x-ratelimit-*` family (requests or tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Configured limit (per minute when set, else per second).
    pub limit: u64,
    /// What is left in the window now.
    pub remaining: u64,
    /// Simulated time until the oldest use in the window expires.
    pub reset_ns: u64,
}

/// Highest loads seen in any sliding window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Peak {
    /// Most arrivals in one simulated second.
    pub rps: u64,
    /// Most arrivals in one simulated minute.
    pub rpm: u64,
    /// Most admitted tokens in one simulated second.
    pub tps: u64,
    /// Most admitted tokens in one simulated minute.
    pub tpm: u64,
}

/// Logs of admitted requests and arrivals for one account x model.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// (simulated time, total tokens) of each admitted request, oldest first.
    admitted: VecDeque<(u64, u64)>,
    /// Simulated time of each arrival that reached the limiter, oldest first.
    arrivals: VecDeque<u64>,
    /// Peaks so far.
    pub peak: Peak,
}

impl Window {
    /// Records an arrival at `now` and admits it (occupying `total_tokens`) unless a limit
    /// is full; refused arrivals occupy nothing.
    pub fn arrive(
        &mut self,
        limits: &Limits,
        now: u64,
        prompt_tokens: u64,
        total_tokens: u64,
    ) -> Result<(), Refusal> {
        self.prune(limits, now);
        self.arrivals.push_back(now);
        self.peak.rps = self
            .peak
            .rps
            .max(count_since(&self.arrivals, now, SECOND_NS));
        self.peak.rpm = self
            .peak
            .rpm
            .max(count_since(&self.arrivals, now, MINUTE_NS));
        self.check(limits, now, prompt_tokens)?;
        self.admitted.push_back((now, total_tokens));
        self.peak.tps = self.peak.tps.max(self.tokens_in(now, SECOND_NS));
        self.peak.tpm = self.peak.tpm.max(self.tokens_in(now, MINUTE_NS));
        Ok(())
    }

    /// First full limit in the order surge, burst, rps, rpm, tps, tpm.
    fn check(&self, limits: &Limits, now: u64, prompt: u64) -> Result<(), Refusal> {
        if let Some(surge) = limits.surge {
            let last = self.requests_in(now, SECOND_NS);
            // The second before: (now - 2 s, now - 1 s], empty before time began.
            let before = now
                .checked_sub(SECOND_NS)
                .map_or(0, |then| self.requests_in(then, SECOND_NS));
            let allowed = surge.floor + (surge.growth * before as f64) as u64;
            if last + 1 > allowed {
                return Err(Refusal {
                    kind: LimitKind::Burst,
                    limit: allowed,
                    used: last,
                    requested: 1,
                    wait_ns: self.wait_for_requests(now, SECOND_NS, allowed),
                });
            }
        }
        let request_limits = [
            (
                LimitKind::Burst,
                limits.burst.map(|b| (b.requests, b.window_ms * 1_000_000)),
            ),
            (LimitKind::Rps, limits.rps.map(|l| (l, SECOND_NS))),
            (LimitKind::Rpm, limits.rpm.map(|l| (l, MINUTE_NS))),
        ];
        for (kind, set) in request_limits {
            let Some((limit, span)) = set else { continue };
            let used = self.requests_in(now, span);
            if used + 1 > limit {
                let wait_ns = self.wait_for_requests(now, span, limit);
                return Err(Refusal {
                    kind,
                    limit,
                    used,
                    requested: 1,
                    wait_ns,
                });
            }
        }
        let token_limits = [
            (LimitKind::Tps, limits.tps, SECOND_NS),
            (LimitKind::Tpm, limits.tpm, MINUTE_NS),
        ];
        for (kind, set, span) in token_limits {
            let Some(limit) = set else { continue };
            let used = self.tokens_in(now, span);
            if used + prompt > limit {
                let wait_ns = self.wait_for_tokens(now, span, limit, prompt);
                return Err(Refusal {
                    kind,
                    limit,
                    used,
                    requested: prompt,
                    wait_ns,
                });
            }
        }
        Ok(())
    }

    /// The `x-ratelimit-*-requests` view: per minute if set, else per second.
    pub fn request_info(&self, limits: &Limits, now: u64) -> Option<RateInfo> {
        let (limit, span) = match (limits.rpm, limits.rps) {
            (Some(l), _) => (l, MINUTE_NS),
            (None, Some(l)) => (l, SECOND_NS),
            (None, None) => return None,
        };
        Some(RateInfo {
            limit,
            remaining: limit.saturating_sub(self.requests_in(now, span)),
            reset_ns: self.oldest_expiry(now, span),
        })
    }

    /// The `x-ratelimit-*-tokens` view: per minute if set, else per second.
    pub fn token_info(&self, limits: &Limits, now: u64) -> Option<RateInfo> {
        let (limit, span) = match (limits.tpm, limits.tps) {
            (Some(l), _) => (l, MINUTE_NS),
            (None, Some(l)) => (l, SECOND_NS),
            (None, None) => return None,
        };
        Some(RateInfo {
            limit,
            remaining: limit.saturating_sub(self.tokens_in(now, span)),
            reset_ns: self.oldest_expiry(now, span),
        })
    }

    /// Admitted entries inside the window of `span` ending at `now`: (now - span, now].
    fn in_window(&self, now: u64, span: u64) -> impl Iterator<Item = &(u64, u64)> {
        self.admitted
            .iter()
            .filter(move |(t, _)| t + span > now && *t <= now)
    }

    fn requests_in(&self, now: u64, span: u64) -> u64 {
        self.in_window(now, span).count() as u64
    }

    fn tokens_in(&self, now: u64, span: u64) -> u64 {
        self.in_window(now, span).map(|(_, tokens)| tokens).sum()
    }

    fn oldest_expiry(&self, now: u64, span: u64) -> u64 {
        self.in_window(now, span)
            .next()
            .map_or(0, |(t, _)| t + span - now)
    }

    /// Time until only `limit - 1` admitted requests remain in the window.
    fn wait_for_requests(&self, now: u64, span: u64, limit: u64) -> u64 {
        let used = self.requests_in(now, span);
        let must_leave = (used + 1).saturating_sub(limit) as usize;
        match must_leave.checked_sub(1) {
            Some(last) => self
                .in_window(now, span)
                .nth(last)
                .map_or(span, |(t, _)| t + span - now),
            None => 0,
        }
    }

    /// Time until enough tokens leave the window for `need` more to fit.
    fn wait_for_tokens(&self, now: u64, span: u64, limit: u64, need: u64) -> u64 {
        if need > limit {
            // Never fits; a full window is the honest "not soon".
            return span;
        }
        let mut used = self.tokens_in(now, span);
        for (t, tokens) in self.in_window(now, span) {
            used -= tokens;
            if used + need <= limit {
                return t + span - now;
            }
        }
        0
    }

    /// Drops entries too old to matter for any window.
    fn prune(&mut self, limits: &Limits, now: u64) {
        let burst_span = limits.burst.map_or(0, |b| b.window_ms * 1_000_000);
        let keep = MINUTE_NS.max(burst_span);
        while self.admitted.front().is_some_and(|(t, _)| t + keep <= now) {
            self.admitted.pop_front();
        }
        while self.arrivals.front().is_some_and(|t| t + MINUTE_NS <= now) {
            self.arrivals.pop_front();
        }
    }
}

/// Arrivals inside a window of `span` ending at `now`.
fn count_since(log: &VecDeque<u64>, now: u64, span: u64) -> u64 {
    log.iter().rev().take_while(|t| *t + span > now).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Burst, Surge};

    const MS: u64 = 1_000_000;

    fn limits() -> Limits {
        Limits {
            rpm: Some(3),
            rps: Some(2),
            tpm: Some(100),
            tps: None,
            burst: None,
            surge: None,
        }
    }

    #[test]
    fn rps_then_rpm_refuse_and_slide() {
        let l = limits();
        let mut w = Window::default();
        w.arrive(&l, 0, 1, 10).unwrap();
        w.arrive(&l, 100 * MS, 1, 10).unwrap();
        let r = w.arrive(&l, 200 * MS, 1, 10).unwrap_err();
        assert_eq!((r.kind, r.limit, r.used), (LimitKind::Rps, 2, 2));
        assert_eq!(r.wait_ns, 800 * MS);
        w.arrive(&l, 1000 * MS, 1, 10).unwrap();
        let r = w.arrive(&l, 2000 * MS, 1, 10).unwrap_err();
        assert_eq!(r.kind, LimitKind::Rpm);
        assert_eq!(r.wait_ns, MINUTE_NS - 2000 * MS);
        w.arrive(&l, MINUTE_NS, 1, 10).unwrap();
        assert_eq!(w.peak.rpm, 5);
        assert_eq!(w.peak.rps, 3);
    }

    #[test]
    fn tokens_refuse_on_prompt_and_wait_for_enough() {
        let l = limits();
        let mut w = Window::default();
        w.arrive(&l, 0, 30, 40).unwrap();
        w.arrive(&l, 1000 * MS, 30, 40).unwrap();
        let r = w.arrive(&l, 2000 * MS, 30, 40).unwrap_err();
        assert_eq!((r.kind, r.used, r.requested), (LimitKind::Tpm, 80, 30));
        assert_eq!(r.wait_ns, MINUTE_NS - 2000 * MS);
        w.arrive(&l, 2500 * MS, 20, 20).unwrap();
        assert_eq!(w.peak.tpm, 100);
        let info = w.token_info(&l, 2500 * MS).unwrap();
        assert_eq!((info.limit, info.remaining), (100, 0));
    }

    #[test]
    fn burst_checked_first() {
        let l = Limits {
            burst: Some(Burst {
                requests: 2,
                window_ms: 100,
            }),
            ..Limits::default()
        };
        let mut w = Window::default();
        w.arrive(&l, 0, 1, 1).unwrap();
        w.arrive(&l, 10 * MS, 1, 1).unwrap();
        let r = w.arrive(&l, 20 * MS, 1, 1).unwrap_err();
        assert_eq!((r.kind, r.wait_ns), (LimitKind::Burst, 80 * MS));
        w.arrive(&l, 100 * MS, 1, 1).unwrap();
    }

    #[test]
    fn surge_refuses_a_jump_and_passes_a_ramp() {
        let l = Limits {
            surge: Some(Surge {
                floor: 3,
                growth: 2.0,
            }),
            ..Limits::default()
        };
        // From quiet, ten evenly spaced in one second: the fourth is refused.
        let mut w = Window::default();
        let refused = (0..10)
            .filter(|i| w.arrive(&l, i * 100 * MS, 1, 1).is_err())
            .count();
        assert_eq!(refused, 7);
        // A smooth ramp from 2/s growing 1.5x a second up to 10/s, then holding: never refused.
        let mut w = Window::default();
        let mut t = 0.0_f64;
        while t < 8.0 {
            let rate = (2.0 * 1.5_f64.powf(t)).min(10.0);
            let at = (t * 1e9) as u64;
            assert!(w.arrive(&l, at, 1, 1).is_ok(), "at {:.3} s", t);
            t += 1.0 / rate;
        }
    }
}
