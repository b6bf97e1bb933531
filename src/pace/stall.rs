//! Stalls: sends that may have reached the upstream later than their bucket's windows were
//! widened for, and the later sends they put at risk.
//!
//! The windows are widened by the spread of recent lateness, so a stall longer than any recent
//! one (the machine or the network holds one send back) can put a send into the upstream's
//! next window, where the send ten places later, on time, makes one too many. The round trip
//! tells the sender at once how late its send may have arrived; a later send of the same
//! bucket whose slot the stalled one may crowd gives its slot back and asks again, so the
//! bucket places it with the stall counted (its spread has grown by then).
//!
//! Pure: times come in as arguments.

/// Most stalls a bucket keeps (the newest); they matter for about a second each.
const MAX_STALLS: usize = 16;

/// The latest a send can have reached the upstream after its slot: how late it left plus the
/// whole round trip the upstream did not spend processing (the way out is at most that). None
/// when the upstream does not say how long it spent: then the round trip includes the model's
/// time, and bounds nothing.
pub fn lateness_bound(
    slot_ms: u64,
    sent_ms: u64,
    headers_ms: u64,
    processing_ms: Option<u64>,
) -> Option<u64> {
    let processing = processing_ms?;
    let left = sent_ms.saturating_sub(slot_ms);
    let transit = headers_ms
        .saturating_sub(sent_ms)
        .saturating_sub(processing);
    Some(left.saturating_add(transit))
}

/// A send that may have arrived up to `bound_ms` after its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stall {
    slot_ms: u64,
    bound_ms: u64,
}

/// The recent stalls of one bucket's sends, as one sender saw them.
#[derive(Debug, Clone, Default)]
pub struct Stalls(Vec<Stall>);

impl Stalls {
    /// Notes a send at `slot_ms` that may have arrived `bound_ms` late, if that is more than the
    /// `allowed_ms` its slot was widened for; true when noted.
    pub fn note(&mut self, slot_ms: u64, bound_ms: u64, allowed_ms: u64) -> bool {
        if bound_ms <= allowed_ms {
            return false;
        }
        if self.0.len() >= MAX_STALLS {
            self.0.remove(0);
        }
        self.0.push(Stall { slot_ms, bound_ms });
        true
    }

    /// Whether a send at `slot_ms`, placed with its windows widened by `allowed_ms` (a short
    /// window is `second_ms` before widening), may make one too many in the upstream's window
    /// with a stalled send: the bucket counted the two in one window when their slots were
    /// within `second_ms + allowed_ms`; beyond `second_ms + bound` of the stalled one they
    /// cannot share one; in between, the stall may have brought them together uncounted.
    /// Stalls too old to matter to this or any later slot are forgotten.
    pub fn threatens(&mut self, slot_ms: u64, allowed_ms: u64, second_ms: u64) -> bool {
        self.0.retain(|s| {
            s.slot_ms
                .saturating_add(second_ms)
                .saturating_add(s.bound_ms)
                >= slot_ms
        });
        self.0.iter().any(|s| {
            let counted_until = s
                .slot_ms
                .saturating_add(second_ms)
                .saturating_add(allowed_ms);
            let reach = s
                .slot_ms
                .saturating_add(second_ms)
                .saturating_add(s.bound_ms);
            slot_ms >= counted_until && slot_ms < reach
        })
    }

    /// No stall is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
#[path = "stall_tests.rs"]
mod tests;
