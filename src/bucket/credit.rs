//! Admission credits: admissions a bucket (or a client's meter) hands an isolate ahead, spent with no round trip while it has ample room.
//!
//! A credit of n admissions of up to `tokens` each is counted in the bucket's windows from the
//! moment it is granted, over its whole life (an admission may be spent any time in it), so the
//! limits hold whatever the isolate does with it. A bucket grants one only beside a request
//! that goes now with no pacing rule in force (slow start, a surge hold), no park and no
//! cooldown, and sizes it to at most a quarter of the room left under every limit, counting
//! everything that could share a window with it: each grant leaves three quarters of the room,
//! so however many isolates ask, credits shrink to none as a limit nears and every admission is
//! asked for one by one (the exact path).

use crate::bucket::SettleOutcome;
use crate::window::{caps, Limits, MinuteUse, Used, WindowSpec, Windows};
use serde::{Deserialize, Serialize};

/// One credit may take at most this fraction of the room left (1/4).
const ROOM_SHARE: u64 = 4;
/// Most admissions in one credit, whatever the config says (a bucket keeps one record per
/// credit, with a bit per admission).
pub const MAX_COUNT: u64 = 64;

/// Admissions handed out ahead, and (isolate side) how many are spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// Lease of the first admission; the others follow it.
    pub first_lease: u64,
    /// Admissions in the credit.
    pub count: u64,
    /// Tokens each admission reserves: a request estimated above it asks the bucket.
    pub tokens: u64,
    /// Spendable until then (the end of its life).
    pub until_ms: u64,
    /// How late a send may still leave after `until_ms` (the windows' widening).
    pub late_ms: u64,
    /// Admissions spent so far.
    #[serde(default)]
    pub spent: u64,
}

impl Credit {
    /// Spends one admission for a request of `tokens` at `now_ms`: its lease, and how late
    /// its send may leave.
    pub fn spend(&mut self, now_ms: u64, tokens: u64) -> Option<(u64, u64)> {
        if self.done(now_ms) || tokens > self.tokens {
            return None;
        }
        let lease = self.first_lease.checked_add(self.spent)?;
        self.spent = self.spent.saturating_add(1);
        let late = self.until_ms.saturating_sub(now_ms);
        Some((lease, late.saturating_add(self.late_ms)))
    }

    /// Takes back its last unspent admission, if it may still be spent: its lease, to give
    /// back.
    fn surrender(&mut self, now_ms: u64) -> Option<u64> {
        if self.done(now_ms) {
            return None;
        }
        self.count = self.count.saturating_sub(1);
        self.first_lease.checked_add(self.count)
    }

    /// True when nothing more can be spent.
    pub fn done(&self, now_ms: u64) -> bool {
        now_ms > self.until_ms || self.spent >= self.count
    }

    /// The leases not spent, to give back.
    pub fn unspent(&self) -> Vec<u64> {
        (self.spent..self.count)
            .filter_map(|i| self.first_lease.checked_add(i))
            .collect()
    }
}

/// How long a credit may be spent: half the short window (500 ms).
pub fn life_ms(spec: WindowSpec) -> u64 {
    spec.second_ms / 2
}

/// Whether the settle of an admission spent from a credit may wait (up to a credit's life) to
/// ride with the isolate's next call to its bucket: a served answer only corrects the tokens
/// counted in a bucket with ample room. Anything else (a failure, a 429, a release) changes
/// what the bucket may admit next, and goes at once.
pub fn settle_may_wait(outcome: &SettleOutcome) -> bool {
    matches!(outcome, SettleOutcome::Ok { .. })
}

/// Admissions to hand out beside a request of `tokens` admitted now: at most `max` (and
/// `MAX_COUNT`), and at most a quarter of the room every limit has left once that request is
/// counted, judged by everything counted in any window that ends from now on (an upper bound
/// of every window the credit can share). 0 when a limit is near.
pub fn size(
    windows: &Windows,
    now_ms: u64,
    limits: &Limits,
    spec: WindowSpec,
    tokens: u64,
    max: u64,
) -> u64 {
    if max == 0 {
        return 0;
    }
    caps(limits, spec)
        .iter()
        .fold(max.min(MAX_COUNT), |n, cap| {
            let used = windows.counted_from(now_ms, cap.window_ms);
            let by_requests = cap.requests.map_or(u64::MAX, |r| {
                r.saturating_sub(used.requests.saturating_add(1)) / ROOM_SHARE
            });
            let by_tokens = cap.tokens.map_or(u64::MAX, |k| {
                share_of(k.saturating_sub(used.tokens.saturating_add(tokens)), tokens)
            });
            n.min(by_requests).min(by_tokens)
        })
}

/// Admissions of `tokens` each that one credit may take of `room` tokens left (a quarter).
pub fn share_of(room: u64, tokens: u64) -> u64 {
    room / ROOM_SHARE.saturating_mul(tokens.max(1))
}

/// The credits one isolate holds for one bucket: the one being spent and, asked for ahead
/// when it runs low, the next, so a steady stream of requests never waits for a round trip.
/// For a meter's, also what its minute counts as seen from here, and the minute's length
/// (`seen`).
#[derive(Debug, Clone, Default)]
pub struct Holding {
    credits: Vec<Credit>,
    seen: Option<(MinuteUse, u64)>,
}

impl Holding {
    /// Spends one admission for a request of `tokens` at `now_ms` (`Credit::spend`), moving on
    /// to the next credit when the first has ended; also the unspent leases of credits that
    /// ended, to give back.
    pub fn spend(&mut self, now_ms: u64, tokens: u64) -> (Option<(u64, u64)>, Vec<u64>) {
        let mut unspent = self.drop_ended(now_ms);
        let spent = self
            .credits
            .first_mut()
            .and_then(|c| c.spend(now_ms, tokens));
        if let (Some(_), Some((seen, _))) = (spent, &mut self.seen) {
            seen.used.requests = seen.used.requests.saturating_add(1);
        }
        unspent.extend(self.drop_ended(now_ms));
        (spent, unspent)
    }

    /// For a request too large for the admissions held (none was spent for it), one of them
    /// given up: its lease, to give back ahead of the request's own ask, so the room it held
    /// is the request's. For a meter's credits only: giving back rides with the ask there,
    /// while a bucket's would cost a call of its own.
    pub fn surrender(&mut self, now_ms: u64) -> Option<u64> {
        self.credits.iter_mut().find_map(|c| c.surrender(now_ms))
    }

    /// Keeps a new credit after those held; returns the unspent leases of the oldest if more
    /// than two would be held.
    ///
    /// A meter's minute seen counts the new credit as the meter does: its tokens reserved
    /// (its admissions are the client's own) until a minute after its end.
    pub fn keep(&mut self, credit: Credit) -> Vec<u64> {
        if let Some((seen, minute_ms)) = &mut self.seen {
            let reserved = credit.count.saturating_mul(credit.tokens);
            seen.used.tokens = seen.used.tokens.saturating_add(reserved);
            let clear_ms = credit.until_ms.saturating_add(*minute_ms);
            seen.requests_clear_ms = seen.requests_clear_ms.max(clear_ms);
            seen.tokens_clear_ms = seen.tokens_clear_ms.max(clear_ms);
        }
        self.credits.push(credit);
        if self.credits.len() > 2 {
            return self.credits.remove(0).unspent();
        }
        Vec::new()
    }

    /// Takes what a meter answered of its minute (of `minute_ms`) as what this isolate's
    /// client has used, less the admissions the credits held leave unspent: those are the
    /// client's to spend (or go back to the meter). Their tokens stay counted: a request
    /// larger than a credit's admissions asks the meter, which counts them.
    pub fn observe(&mut self, minute: MinuteUse, minute_ms: u64) -> MinuteUse {
        let unspent = (self.credits.iter()).map(|c| c.count.saturating_sub(c.spent));
        let requests = unspent.fold(minute.used.requests, u64::saturating_sub);
        let used = Used {
            requests,
            ..minute.used
        };
        let seen = MinuteUse { used, ..minute };
        self.seen = Some((seen, minute_ms));
        seen
    }

    /// A meter's minute as this isolate's client sees it: what the meter last answered
    /// (`observe`), with the credits kept and the admissions spent from them since.
    pub fn seen(&self) -> Option<MinuteUse> {
        self.seen.map(|(seen, _)| seen)
    }

    /// Whether to ask for the next credit now: one is held, and a quarter or less of it is
    /// left, in admissions or in life.
    pub fn wants_next(&self, now_ms: u64, life_ms: u64) -> bool {
        let [credit] = self.credits.as_slice() else {
            return false;
        };
        let left = credit.count.saturating_sub(credit.spent);
        let life_left = credit.until_ms.saturating_sub(now_ms);
        left.saturating_mul(ROOM_SHARE) <= credit.count
            || life_left.saturating_mul(ROOM_SHARE) <= life_ms
    }

    /// Drops every credit; their unspent leases.
    pub fn drop_all(&mut self) -> Vec<u64> {
        self.credits.drain(..).flat_map(|c| c.unspent()).collect()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.credits.is_empty()
    }

    /// Drops the credits that have ended (spent out or past their life); their unspent leases.
    pub fn drop_ended(&mut self, now_ms: u64) -> Vec<u64> {
        let mut unspent = Vec::new();
        while let Some(first) = self.credits.first().filter(|c| c.done(now_ms)) {
            unspent.extend(first.unspent());
            self.credits.remove(0);
        }
        unspent
    }
}

#[cfg(test)]
#[path = "credit_tests.rs"]
pub(crate) mod tests;
