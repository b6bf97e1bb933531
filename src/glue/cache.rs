//! What this isolate last heard of each bucket, so known-busy buckets cost no round trip.
//!
//! Only a hint: entries are capped to a short horizon, so a cleared or freed bucket is asked
//! again soon, and the bucket DO stays the only authority.

use std::cell::RefCell;
use std::collections::HashMap;

/// Longest time this isolate trusts "busy until" without asking again.
const HORIZON_MS: u64 = 5_000;

thread_local! {
    static FREE_AT: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    /// (share of room left, when heard) per bucket.
    static HEADROOM: RefCell<HashMap<String, (f64, u64)>> = RefCell::new(HashMap::new());
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
