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

/// What a minute window counts from now on (`Windows::minute_use`): the room a client is told
/// it has left (`access::ratelimit`), and when all of it will have left the window. Sent as
/// `[requests, tokens, requests_clear_ms, tokens_clear_ms]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u64; 4]", into = "[u64; 4]")]
pub struct MinuteUse {
    /// Requests and tokens counted in some minute window ending at or after now.
    pub used: Used,
    /// When none of those requests counts any more (now if none does).
    pub requests_clear_ms: u64,
    /// When none of those tokens counts any more.
    pub tokens_clear_ms: u64,
}

impl From<[u64; 4]> for MinuteUse {
    fn from([requests, tokens, requests_clear_ms, tokens_clear_ms]: [u64; 4]) -> Self {
        MinuteUse {
            used: Used { requests, tokens },
            requests_clear_ms,
            tokens_clear_ms,
        }
    }
}

impl From<MinuteUse> for [u64; 4] {
    fn from(m: MinuteUse) -> Self {
        [
            m.used.requests,
            m.used.tokens,
            m.requests_clear_ms,
            m.tokens_clear_ms,
        ]
    }
}

/// Requests counted over a span of time: one admitted request (maybe scheduled in the future),
/// tokens that landed late (no request), a granule of past ones merged by `compact`, or a credit
/// (admissions handed out ahead, to be spent any time in its span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The last ms they may count from: a request's start (unix ms), a granule's last ms, a
    /// credit's end.
    pub at_ms: u64,
    /// Tokens reserved or used (estimates until reconciled with real usage).
    pub tokens: u64,
    /// Requests counted: 1 for one request, 0 for late tokens (a long stream settled after its
    /// request left the windows), n for a granule or a credit.
    pub requests: u64,
    /// The first ms they may count from: `at_ms` for one request. An entry counts in every
    /// window its span meets.
    pub from_ms: u64,
    /// A credit's id (its first lease), while any of its admissions may still change it.
    pub credit: Option<u64>,
}

impl Entry {
    fn one(at_ms: u64, tokens: u64, requests: u64) -> Entry {
        Entry {
            at_ms,
            tokens,
            requests,
            from_ms: at_ms,
            credit: None,
        }
    }

    fn merged(&self) -> bool {
        self.from_ms != self.at_ms
    }

    /// True when the entry counts in the window (end - window_ms, end].
    fn counts_in(&self, end_ms: u64, window_ms: u64) -> bool {
        self.from_ms <= end_ms && self.at_ms.saturating_add(window_ms) > end_ms
    }
}

/// The counted requests, sorted by `at_ms`: exact for the recent past and the future, merged
/// into granules further back (`compact`), so its size does not grow with the request rate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Packed", into = "Packed")]
pub struct Windows {
    entries: Vec<Entry>,
}

/// Minute granules: a request merged into one counts up to a 120th of the minute late (the
/// capacity this costs: at most 1/120 of RPM and TPM, 0.8 %).
const GRANULES_PER_MINUTE: u64 = 120;
/// Each minute granule holds this many fine ones (20 ms with real windows): the recent past
/// is merged into those only above `MAX_EXACT` requests, costing then at most 2 % of RPS/TPS.
const FINE_PER_GRANULE: u64 = 25;
/// Past requests within the pacing horizon kept one by one.
const MAX_EXACT: usize = 64;

/// Granule lengths (fine, minute) under `spec`; the minute one a multiple of the fine one, both
/// aligned to 0, so a fine granule always lies within one minute granule.
fn granules(spec: WindowSpec) -> (u64, u64) {
    let fine = (spec.minute_ms / (GRANULES_PER_MINUTE * FINE_PER_GRANULE)).max(1);
    (fine, fine.saturating_mul(FINE_PER_GRANULE))
}

/// The stored form: times relative to `base`, an entry as `[at, tokens]` or, when it is not
/// one request, `[at, tokens, requests, at - from]`, a credit with its id last (a bucket's
/// state stays a few KB).
#[derive(Serialize, Deserialize)]
struct Packed {
    base: u64,
    e: Vec<Vec<u64>>,
}

impl From<Windows> for Packed {
    fn from(w: Windows) -> Packed {
        let base = w.entries.first().map_or(0, |e| e.from_ms);
        let e = w
            .entries
            .iter()
            .map(|e| {
                let at = e.at_ms.saturating_sub(base);
                let span = e.at_ms.saturating_sub(e.from_ms);
                match e.credit {
                    Some(id) => vec![at, e.tokens, e.requests, span, id],
                    None if e.requests == 1 && span == 0 => vec![at, e.tokens],
                    None => vec![at, e.tokens, e.requests, span],
                }
            })
            .collect();
        Packed { base, e }
    }
}

impl Windows {
    /// The stored form of windows written as a list of requests (`{"at_ms", "tokens",
    /// "tokens_only"}`, before they were packed): the same requests, packed (built as a
    /// `Value` by hand: a second serializer for the windows would cost bundle size).
    pub fn from_log(log: &serde_json::Value) -> serde_json::Value {
        let mut entries: Vec<(u64, serde_json::Value)> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let field = |k: &str| e.get(k).and_then(serde_json::Value::as_u64);
                let (at, tokens) = (field("at_ms")?, field("tokens")?);
                let only_tokens = e.get("tokens_only").and_then(serde_json::Value::as_bool);
                let packed = match only_tokens {
                    Some(true) => serde_json::json!([at, tokens, 0, 0]),
                    _ => serde_json::json!([at, tokens]),
                };
                Some((at, packed))
            })
            .collect();
        entries.sort_by_key(|(at, _)| *at);
        let e: Vec<serde_json::Value> = entries.into_iter().map(|(_, v)| v).collect();
        serde_json::json!({"base": 0, "e": e})
    }
}

impl From<Packed> for Windows {
    fn from(p: Packed) -> Windows {
        let entries =
            p.e.iter()
                .filter_map(|v| {
                    let at = p.base.saturating_add(*v.first()?);
                    let tokens = *v.get(1)?;
                    let requests = v.get(2).copied().unwrap_or(1);
                    let span = v.get(3).copied().unwrap_or(0);
                    Some(Entry {
                        at_ms: at,
                        tokens,
                        requests,
                        from_ms: at.saturating_sub(span),
                        credit: v.get(4).copied(),
                    })
                })
                .collect();
        Windows { entries }
    }
}

/// One window length with its caps (None = unlimited).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cap {
    /// The window's length.
    pub window_ms: u64,
    /// Requests allowed in it.
    pub requests: Option<u64>,
    /// Tokens allowed in it.
    pub tokens: Option<u64>,
}

/// Caps per window: second = (rps, tps), minute = (rpm, tpm). The effective minute limit
/// min(RPM, RPS x 60) needs no cap of its own: the sliding second windows tile every minute.
pub(crate) fn caps(limits: &Limits, spec: WindowSpec) -> [Cap; 2] {
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
            // A credit's sends may go any time in its span: only slots are spaced (credits are
            // handed out only while a bucket has ample room).
            let slots = self
                .entries
                .iter()
                .filter(|e| e.requests > 0 && (!e.merged() || e.at_ms <= now_ms));
            lists.push(slots.map(near).collect());
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
        // The window ending at now holds what has not left and began by now: entries before
        // `arrived`, and credits that began by now and end later. Sweep on from there.
        let mut left = entries.partition_point(|e| e.at_ms.saturating_add(w) <= now_ms);
        let mut arrived = entries.partition_point(|e| e.at_ms <= now_ms);
        let inside = entries.get(left..).unwrap_or(&[]);
        let inside = inside.iter().filter(|e| e.from_ms <= now_ms);
        let (mut count, mut sum) = inside.fold((0u64, 0u64), |(n, k), e| {
            (n.saturating_add(e.requests), k.saturating_add(e.tokens))
        });
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
                count = count.saturating_sub(e.requests);
                sum = sum.saturating_sub(e.tokens);
                left += 1;
            }
            while let Some(e) = entries.get(arrived).filter(|e| e.at_ms <= x) {
                if e.from_ms > now_ms {
                    count = count.saturating_add(e.requests);
                    sum = sum.saturating_add(e.tokens);
                }
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
    pub fn reserve(&mut self, at_ms: u64, tokens: u64) {
        self.insert(Entry::one(at_ms, tokens, 1));
    }

    /// Record credit `id`: `requests` admissions and their `tokens`, to be spent any time in
    /// [from_ms, at_ms].
    pub fn reserve_credit(&mut self, id: u64, span: (u64, u64), requests: u64, tokens: u64) {
        let (from_ms, at_ms) = span;
        self.insert(Entry {
            at_ms: at_ms.max(from_ms),
            tokens,
            requests,
            from_ms,
            credit: Some(id),
        });
    }

    /// Record tokens used at `at_ms` by a request already counted (late usage of a long stream).
    pub fn add_tokens(&mut self, at_ms: u64, tokens: u64) {
        self.insert(Entry::one(at_ms, tokens, 0));
    }

    fn insert(&mut self, entry: Entry) {
        let i = self.entries.partition_point(|e| e.at_ms <= entry.at_ms);
        self.entries.insert(i, entry);
    }

    /// The entry holding a request: its credit's, or the one reserved at `at_ms` with `tokens`
    /// (itself, or the granule it was merged into: granules are aligned and disjoint, and
    /// requests with the same start and tokens are interchangeable).
    fn holding(&mut self, at_ms: u64, tokens: u64, credit: Option<u64>) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| match (credit, e.credit) {
            (Some(id), Some(of)) => id == of && e.requests > 0 && e.tokens >= tokens,
            (Some(_), None) | (None, Some(_)) => false,
            (None, None) if e.merged() || e.requests != 1 => {
                (e.from_ms..=e.at_ms).contains(&at_ms) && e.requests > 0 && e.tokens >= tokens
            }
            (None, None) => e.at_ms == at_ms && e.tokens == tokens,
        })
    }

    /// Set the tokens of a request (reserved at `at_ms` with `tokens`, or spent from `credit`)
    /// to the tokens actually used; false if it is no longer counted (it left the windows).
    pub fn reconcile(
        &mut self,
        at_ms: u64,
        tokens: u64,
        credit: Option<u64>,
        actual_tokens: u64,
    ) -> bool {
        match self.holding(at_ms, tokens, credit) {
            Some(e) => {
                e.tokens = e
                    .tokens
                    .saturating_sub(tokens)
                    .saturating_add(actual_tokens);
                true
            }
            None => false,
        }
    }

    /// Take back a request (reserved at `at_ms` with `tokens`, or spent from `credit`): it
    /// never counted upstream. False if it is no longer counted.
    pub fn release(&mut self, at_ms: u64, tokens: u64, credit: Option<u64>) -> bool {
        let Some(e) = self.holding(at_ms, tokens, credit) else {
            return false;
        };
        e.requests = e.requests.saturating_sub(1);
        e.tokens = e.tokens.saturating_sub(tokens);
        self.entries.retain(|e| e.requests > 0 || e.tokens > 0);
        true
    }

    /// Merge the past into granules where exactness is no longer needed: requests older than
    /// `exact_ms` (the pacing's look-back) into minute granules, and, when more than
    /// `MAX_EXACT` past requests are still single, the rest of the past into fine granules;
    /// credits whose admissions may still change them (`open_credits`) stay whole. A merged
    /// request counts at its granule's last ms, which is still in the past: every window ending
    /// now or later holds at least what it held exactly, so the merged windows never admit what
    /// the exact log would refuse.
    pub fn compact(&mut self, now_ms: u64, spec: WindowSpec, exact_ms: u64, open_credits: &[u64]) {
        let (fine, minute) = granules(spec);
        let last_ms = |at: u64, g: u64| (at / g).saturating_mul(g).saturating_add(g - 1);
        let exact_before = now_ms.saturating_sub(exact_ms);
        let singles = self
            .entries
            .iter()
            .filter(|e| e.at_ms < now_ms && !e.merged())
            .count();
        let fine_too = singles > MAX_EXACT;
        let granule = |e: &Entry| {
            if e.credit.is_some_and(|id| open_credits.contains(&id)) {
                None
            } else if last_ms(e.at_ms, minute) < exact_before {
                Some(minute)
            } else if fine_too && last_ms(e.at_ms, fine) < now_ms {
                Some(fine)
            } else {
                None
            }
        };
        // Most calls find nothing new to merge (what is merged is its own granule already).
        let merged_already = |e: &Entry, g: u64| {
            e.credit.is_none() && e.from_ms == (e.at_ms / g).saturating_mul(g) && e.merged()
        };
        if !self
            .entries
            .iter()
            .any(|e| granule(e).is_some_and(|g| !merged_already(e, g)))
        {
            return;
        }
        let mut out: Vec<Entry> = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            let Some(g) = granule(&e) else {
                out.push(e);
                continue;
            };
            // Aligned and disjoint; the span's start no longer matters once it is past.
            let from_ms = (e.at_ms / g).saturating_mul(g);
            let at_ms = last_ms(e.at_ms, g);
            let same =
                |l: &&mut Entry| l.at_ms == at_ms && l.from_ms == from_ms && l.credit.is_none();
            match out.last_mut().filter(same) {
                Some(l) => {
                    l.requests = l.requests.saturating_add(e.requests);
                    l.tokens = l.tokens.saturating_add(e.tokens);
                }
                None => out.push(Entry {
                    at_ms,
                    from_ms,
                    credit: None,
                    ..e
                }),
            }
        }
        // An open credit kept whole can sit between a granule's pieces: keep the order.
        out.sort_by_key(|e| e.at_ms);
        self.entries = out;
    }

    /// Drop entries that no window ending at or after `now_ms` can hold.
    pub fn prune(&mut self, now_ms: u64, spec: WindowSpec) {
        let longest = spec.second_ms.max(spec.minute_ms).max(1);
        self.entries
            .retain(|e| e.at_ms.saturating_add(longest) > now_ms);
    }

    /// Start times of the requests (not late tokens) in [from, to], in order (a granule's
    /// requests at its last ms).
    pub fn request_times(&self, from: u64, to: u64) -> Vec<u64> {
        let start = self.entries.partition_point(|e| e.at_ms < from);
        let end = self.entries.partition_point(|e| e.at_ms <= to);
        self.entries
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .flat_map(|e| (0..e.requests).map(move |_| e.at_ms))
            .collect()
    }

    /// Requests and tokens that count in some window of `window_ms` ending at or after now (the
    /// recent past, credits, and scheduled slots).
    pub fn counted_from(&self, now_ms: u64, window_ms: u64) -> Used {
        self.entries
            .iter()
            .filter(|e| e.at_ms.saturating_add(window_ms) > now_ms)
            .fold(Used::default(), |u, e| Used {
                requests: u.requests.saturating_add(e.requests),
                tokens: u.tokens.saturating_add(e.tokens),
            })
    }

    /// What counts in some minute window ending at or after now (`counted_from`: a request
    /// admitted now must fit every one of them), and when each kind has all left the window.
    pub fn minute_use(&self, now_ms: u64, spec: WindowSpec) -> MinuteUse {
        let clear = |counts: fn(&Entry) -> bool| {
            (self.entries.iter().rev())
                .find(|e| counts(e))
                .map_or(now_ms, |e| {
                    e.at_ms.saturating_add(spec.minute_ms).max(now_ms)
                })
        };
        MinuteUse {
            used: self.counted_from(now_ms, spec.minute_ms),
            requests_clear_ms: clear(|e| e.requests > 0),
            tokens_clear_ms: clear(|e| e.tokens > 0),
        }
    }

    /// Requests and tokens counted in (now - window, now]: scheduled slots are not, credits
    /// handed out by now are.
    pub fn usage(&self, now_ms: u64, window_ms: u64) -> Used {
        self.entries
            .iter()
            .filter(|e| e.counts_in(now_ms, window_ms))
            .fold(Used::default(), |u, e| Used {
                requests: u.requests.saturating_add(e.requests),
                tokens: u.tokens.saturating_add(e.tokens),
            })
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
