//! Sliding request/token windows with scheduled admission: the earliest time a request fits every limit.
//!
//! Invariant: a request is admitted at t only if every window of every length that could
//! contain t (including later windows holding scheduled entries) stays within its limits.

use serde::{Deserialize, Serialize};

/// Per-model limits of one account; any subset may be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per second.
    pub rps: Option<u64>,
    /// Tokens (input + output) per minute.
    pub tpm: Option<u64>,
    /// Tokens per second.
    pub tps: Option<u64>,
}

impl Limits {
    /// The most tokens one request may hold: it must fit the smaller token window alone.
    pub fn token_cap(&self) -> Option<u64> {
        match (self.tps, self.tpm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Window lengths; tests and e2e divide them by a time scale to compress time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Length of the "second" window (RPS, TPS), 1000 normally.
    pub second_ms: u64,
    /// Length of the "minute" window (RPM, TPM), 60000 normally.
    pub minute_ms: u64,
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            second_ms: 1_000,
            minute_ms: 60_000,
        }
    }
}

/// Requests and tokens counted in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    /// Requests admitted in the window.
    pub requests: u64,
    /// Tokens those requests reserved or used.
    pub tokens: u64,
}

/// One admitted request: when it starts (maybe in the future) and its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Start time (unix ms); later than now for a scheduled slot.
    pub at_ms: u64,
    /// Estimated tokens until reconciled with real usage.
    pub tokens: u64,
    /// Lease that may still reconcile or release this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    /// Tokens that landed late (a long stream settled after its request left the window):
    /// they count against token limits only, the request was counted when it started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tokens_only: bool,
}

impl Entry {
    /// Requests this entry counts for: 1, or 0 for late tokens.
    fn requests(&self) -> u64 {
        u64::from(!self.tokens_only)
    }
}

/// The log of admitted requests, sorted by `at_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Windows {
    entries: Vec<Entry>,
}

/// One window length with its caps (None = unlimited).
#[derive(Debug, Clone, Copy)]
struct Cap {
    window_ms: u64,
    requests: Option<u64>,
    tokens: Option<u64>,
}

/// Caps per window: second = (rps, tps), minute = (rpm, tpm). The effective minute limit
/// min(RPM, RPS x 60) needs no cap of its own: the sliding second windows tile every minute.
fn caps(limits: &Limits, spec: WindowSpec) -> [Cap; 2] {
    [
        Cap {
            window_ms: spec.second_ms.max(1),
            requests: limits.rps,
            tokens: limits.tps,
        },
        Cap {
            window_ms: spec.minute_ms.max(1),
            requests: limits.rpm,
            tokens: limits.tpm,
        },
    ]
}

impl Windows {
    /// Number of entries held (past and scheduled).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by start time.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Earliest t >= now where a request of `tokens` fits every window it would fall into
    /// (including later windows holding scheduled entries) and keeps `min_spacing_ms` from
    /// every entry; None when the request alone exceeds TPS or TPM.
    ///
    /// One sweep per window over the entry boundaries (`at`, `at + W`) in time order finds the
    /// "bad" window ends s (no room left in (s - W, s]); a start t is ruled out exactly when
    /// [t, t + W) meets a bad s, and by spacing when |t - at| < spacing. The answer is the
    /// first t >= now outside every ruled-out interval: O(entries) per call.
    pub fn earliest_start(
        &self,
        now_ms: u64,
        limits: &Limits,
        spec: WindowSpec,
        tokens: u64,
        min_spacing_ms: u64,
    ) -> Option<u64> {
        let caps = caps(limits, spec);
        if caps.iter().any(|c| c.tokens.is_some_and(|k| tokens > k)) {
            return None;
        }
        let mut lists: Vec<Vec<(u64, u64)>> = caps
            .iter()
            .filter(|c| c.requests.is_some() || c.tokens.is_some())
            .map(|c| self.ruled_out(c, now_ms, tokens))
            .collect();
        if min_spacing_ms > 0 {
            let near = |e: &Entry| {
                let from = e.at_ms.saturating_add(1).saturating_sub(min_spacing_ms);
                (from, e.at_ms.saturating_add(min_spacing_ms))
            };
            let requests = self.entries.iter().filter(|e| !e.tokens_only);
            lists.push(requests.map(near).collect());
        }
        // Each list holds half-open [from, to) intervals with both ends non-decreasing.
        let mut next = vec![0usize; lists.len()];
        let mut t = now_ms;
        loop {
            let mut moved = false;
            for (list, i) in lists.iter().zip(next.iter_mut()) {
                while list.get(*i).is_some_and(|&(_, to)| to <= t) {
                    *i += 1;
                }
                if let Some(&(_, to)) = list.get(*i).filter(|&&(from, _)| from <= t) {
                    t = to;
                    moved = true;
                }
            }
            if !moved {
                return Some(t);
            }
        }
    }

    /// Starts >= now ruled out by one window: [t, t + W) meets a window end with no room left.
    fn ruled_out(&self, c: &Cap, now_ms: u64, tokens: u64) -> Vec<(u64, u64)> {
        let (w, entries) = (c.window_ms, &self.entries);
        let full = |count: u64, sum: u64| {
            c.requests.is_some_and(|r| count.saturating_add(1) > r)
                || c.tokens.is_some_and(|k| sum.saturating_add(tokens) > k)
        };
        // The window ending at now holds entries left..arrived; sweep on from there.
        let mut left = entries.partition_point(|e| e.at_ms.saturating_add(w) <= now_ms);
        let mut arrived = entries.partition_point(|e| e.at_ms <= now_ms);
        let inside = entries.get(left..arrived).unwrap_or(&[]);
        let mut count = inside.iter().map(Entry::requests).sum::<u64>();
        let mut sum = inside.iter().fold(0u64, |s, e| s.saturating_add(e.tokens));
        let mut out = Vec::new();
        let mut bad_since = full(count, sum).then_some(now_ms);
        // Between consecutive boundaries the window (s - W, s] holds the same entries.
        loop {
            let arrival = entries.get(arrived).map(|e| e.at_ms);
            let Some(departure) = entries.get(left).map(|e| e.at_ms.saturating_add(w)) else {
                break;
            };
            let x = arrival.map_or(departure, |a| a.min(departure));
            while let Some(e) = entries.get(left).filter(|e| e.at_ms.saturating_add(w) <= x) {
                count = count.saturating_sub(e.requests());
                sum = sum.saturating_sub(e.tokens);
                left += 1;
            }
            while let Some(e) = entries.get(arrived).filter(|e| e.at_ms <= x) {
                count = count.saturating_add(e.requests());
                sum = sum.saturating_add(e.tokens);
                arrived += 1;
            }
            match (full(count, sum), bad_since) {
                (true, None) => bad_since = Some(x),
                (false, Some(a)) => {
                    out.push((a.saturating_add(1).saturating_sub(w), x));
                    bad_since = None;
                }
                _ => {}
            }
        }
        if let Some(a) = bad_since {
            // Unreachable with a request cap >= 1 and tokens <= the token cap; never admit then.
            out.push((a.saturating_add(1).saturating_sub(w), u64::MAX));
        }
        out
    }

    /// Record an admitted request starting at `at_ms`.
    pub fn reserve(&mut self, at_ms: u64, tokens: u64, lease: Option<u64>) {
        self.insert(Entry {
            at_ms,
            tokens,
            lease,
            tokens_only: false,
        });
    }

    /// Record tokens used at `at_ms` by a request already counted (late usage of a long stream).
    pub fn add_tokens(&mut self, at_ms: u64, tokens: u64) {
        self.insert(Entry {
            at_ms,
            tokens,
            lease: None,
            tokens_only: true,
        });
    }

    fn insert(&mut self, entry: Entry) {
        let i = self.entries.partition_point(|e| e.at_ms <= entry.at_ms);
        self.entries.insert(i, entry);
    }

    /// Tokens currently counted for the lease's entry.
    pub fn tokens_of(&self, lease: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.lease == Some(lease))
            .map(|e| e.tokens)
    }

    /// Set the lease's entry to the tokens actually used; false if no entry has that lease.
    pub fn reconcile(&mut self, lease: u64, actual_tokens: u64) -> bool {
        match self.entries.iter_mut().find(|e| e.lease == Some(lease)) {
            Some(e) => {
                e.tokens = actual_tokens;
                true
            }
            None => false,
        }
    }

    /// Remove the lease's entry (the request never counted upstream); false if absent.
    pub fn release(&mut self, lease: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.lease != Some(lease));
        self.entries.len() != before
    }

    /// Detach a lease from its entry: the entry stays counted but can no longer change.
    pub fn forget(&mut self, lease: u64) {
        for e in self.entries.iter_mut().filter(|e| e.lease == Some(lease)) {
            e.lease = None;
        }
    }

    /// Drop entries that no window ending at or after `now_ms` can hold.
    pub fn prune(&mut self, now_ms: u64, spec: WindowSpec) {
        let longest = spec.second_ms.max(spec.minute_ms).max(1);
        self.entries
            .retain(|e| e.at_ms.saturating_add(longest) > now_ms);
    }

    /// Start times of the requests (not late tokens) in [from, to], in order.
    pub fn request_times(&self, from: u64, to: u64) -> Vec<u64> {
        let start = self.entries.partition_point(|e| e.at_ms < from);
        let end = self.entries.partition_point(|e| e.at_ms <= to);
        self.entries
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .filter(|e| !e.tokens_only)
            .map(|e| e.at_ms)
            .collect()
    }

    /// Requests and tokens started in (now - window, now]; scheduled entries are not counted.
    pub fn usage(&self, now_ms: u64, window_ms: u64) -> Used {
        self.entries
            .iter()
            .filter(|e| e.at_ms <= now_ms && e.at_ms.saturating_add(window_ms) > now_ms)
            .fold(Used::default(), |u, e| Used {
                requests: u.requests.saturating_add(e.requests()),
                tokens: u.tokens.saturating_add(e.tokens),
            })
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
