//! What this isolate knows of each bucket: what it last heard (so known-busy buckets cost no
//! round trip), which of its own sends may have stalled (`pace::stall`), and whether its
//! upstream lacks the Responses API or text completion for its model.
//!
//! Only a hint: entries are capped to a short horizon, so a cleared or freed bucket is asked
//! again soon, and the bucket DO stays the only authority.

use crate::openai::Endpoint;
use crate::pace::stall::Stalls;
use std::cell::RefCell;
use std::collections::HashMap;

/// Longest time this isolate trusts "busy until" without asking again.
const HORIZON_MS: u64 = 5_000;
/// How long this isolate passes over a bucket whose upstream said it does not serve its
/// model on an endpoint (one call an isolate in that time learns it again).
const UNSUPPORTED_MS: u64 = 600_000;

thread_local! {
    static FREE_AT: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    /// (share of room left, when heard) per bucket.
    static HEADROOM: RefCell<HashMap<String, (f64, u64)>> = RefCell::new(HashMap::new());
    /// Recent sends per bucket that may have arrived later than their slots allowed for.
    static STALLS: RefCell<HashMap<String, Stalls>> = RefCell::new(HashMap::new());
    /// When an upstream said it does not serve a model on an endpoint
    /// (`Endpoint::may_lack_model`), by endpoint, upstream and model: the upstream's answer,
    /// whichever of its accounts asked.
    static UNSUPPORTED: RefCell<HashMap<(Endpoint, String), u64>> = RefCell::new(HashMap::new());
}

/// Whether `upstream` said lately that it does not serve `model` on `endpoint`.
pub fn unsupported(endpoint: Endpoint, upstream: &str, model: &str, now_ms: u64) -> bool {
    UNSUPPORTED.with(|m| {
        m.borrow()
            .get(&(endpoint, format!("{upstream}:{model}")))
            .is_some_and(|at| now_ms.saturating_sub(*at) < UNSUPPORTED_MS)
    })
}

/// Records that `upstream` does not serve `model` on `endpoint`.
pub fn heard_unsupported(endpoint: Endpoint, upstream: &str, model: &str, now_ms: u64) {
    UNSUPPORTED.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 10_000 {
            m.retain(|_, at| now_ms.saturating_sub(*at) < UNSUPPORTED_MS);
        }
        m.insert((endpoint, format!("{upstream}:{model}")), now_ms);
    });
}

/// Notes a send of the bucket at `slot_ms` that may have arrived `bound_ms` late
/// (`Stalls::note`; its short window `second_ms` long).
pub fn stalled(bucket: &str, slot_ms: u64, bound_ms: u64, second_ms: u64) {
    STALLS.with(|m| {
        let mut m = m.borrow_mut();
        match m.get_mut(bucket) {
            Some(stalls) => stalls.note(slot_ms, bound_ms, second_ms),
            None => {
                let mut stalls = Stalls::default();
                stalls.note(slot_ms, bound_ms, second_ms);
                m.insert(bucket.to_string(), stalls);
            }
        }
    });
}

/// Until when the bucket's send at `slot_ms` must wait for a noted stall (`Stalls::hold_until`).
pub fn hold_until(
    bucket: &str,
    slot_ms: u64,
    allowed_ms: u64,
    second_ms: u64,
    now_ms: u64,
) -> Option<u64> {
    STALLS.with(|m| {
        let mut m = m.borrow_mut();
        let stalls = m.get_mut(bucket)?;
        let until = stalls.hold_until(slot_ms, allowed_ms, second_ms, now_ms);
        if stalls.is_empty() {
            m.remove(bucket);
        }
        until
    })
}

/// The room the bucket last said it had left, if heard within the horizon.
pub fn headroom(bucket: &str, now_ms: u64) -> Option<f64> {
    HEADROOM.with(|m| {
        m.borrow()
            .get(bucket)
            .filter(|(_, at)| now_ms.saturating_sub(*at) < HORIZON_MS)
            .map(|(h, _)| *h)
    })
}

/// Records the room the bucket said it had left.
pub fn heard_headroom(bucket: &str, headroom: f64, now_ms: u64) {
    HEADROOM.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 10_000 {
            m.retain(|_, (_, at)| now_ms.saturating_sub(*at) < HORIZON_MS);
        }
        m.insert(bucket.to_string(), (headroom, now_ms));
    });
}

/// When the bucket is believed to be free again (None: unknown or free now).
pub fn free_at(bucket: &str, now_ms: u64) -> Option<u64> {
    FREE_AT.with(|m| m.borrow().get(bucket).copied().filter(|t| *t > now_ms))
}

/// Records that the bucket is busy until `until_ms` (None: parked with no end).
pub fn busy(bucket: &str, until_ms: Option<u64>, now_ms: u64) {
    let until = until_ms.unwrap_or(u64::MAX).min(now_ms + HORIZON_MS);
    FREE_AT.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 10_000 {
            m.retain(|_, t| *t > now_ms);
        }
        m.insert(bucket.to_string(), until);
    });
}

/// Records that the bucket admitted a request.
pub fn free(bucket: &str) {
    FREE_AT.with(|m| {
        m.borrow_mut().remove(bucket);
    });
}
