//! Stalls: sends that may have reached the upstream later than their bucket's windows were
//! widened for, and how long the later sends they may crowd must wait.
//!
//! The windows are widened by the spread of recent lateness, so a stall longer than any recent
//! one (the machine or the network holds one send back) can put a send into the upstream's
//! next window, where the send ten places later, on time, makes one too many. The round trip
//! tells the sender how late its send may have arrived; a later send of the same bucket that
//! the stalled one may crowd waits until the stall's reach has passed, so the two cannot share
//! an upstream window. No slot is given up: the wait moves one send, and a send that waited is
//! noted like any late one, so the sends it may crowd in turn wait too, until the bucket's
//! spread (which has the stall by then) spaces new slots wider. Every send is noted, and each
//! later one judged by its own widening: a send that was late within the wider widening of
//! its own slot may crowd a later one whose widening has narrowed since.
//!
//! Pure: times come in as arguments.

/// Most sends a bucket keeps noted (the latest ones, by how late); each matters for about a
/// second.
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

impl Stall {
    /// Until when a later send may share its upstream window (`second_ms` long).
    fn reach(&self, second_ms: u64) -> u64 {
        (self.slot_ms.saturating_add(second_ms)).saturating_add(self.bound_ms)
    }
}

/// How late one bucket's recent sends may have arrived, as one sender saw them.
#[derive(Debug, Clone, Default)]
pub struct Stalls(Vec<Stall>);

impl Stalls {
    /// Notes a send at `slot_ms` that may have arrived `bound_ms` late. Every send is noted, not
    /// only those later than their own slot's widening: the widening narrows as a spike leaves
    /// the bucket's samples, and a send within its own may still crowd a later one judged by a
    /// narrower (found by the property test). Sends out of reach of any that leaves from now
    /// on are forgotten; beyond `MAX_STALLS`, the one least late.
    pub fn note(&mut self, slot_ms: u64, bound_ms: u64, second_ms: u64) {
        self.0.retain(|s| s.reach(second_ms) > slot_ms);
        if self.0.len() >= MAX_STALLS {
            let least = (self.0.iter().enumerate()).min_by_key(|(_, s)| s.bound_ms);
            if let Some(at) = least.map(|(at, _)| at) {
                self.0.swap_remove(at);
            }
        }
        self.0.push(Stall { slot_ms, bound_ms });
    }

    /// Until when a send at `slot_ms`, placed with its windows widened by `allowed_ms` (a short
    /// window is `second_ms` before widening), must wait at `now_ms`: None if no noted send may
    /// crowd it, else the latest such send's reach. The bucket counted two sends in one window
    /// when their slots were within `second_ms + allowed_ms`; a send leaving `second_ms + bound`
    /// after the noted one's slot cannot share its window; in between, its lateness may have
    /// brought them together uncounted. Sends whose reach has passed are forgotten.
    pub fn hold_until(
        &mut self,
        slot_ms: u64,
        allowed_ms: u64,
        second_ms: u64,
        now_ms: u64,
    ) -> Option<u64> {
        self.0.retain(|s| s.reach(second_ms) > now_ms);
        let counted_apart = |s: &&Stall| {
            slot_ms >= (s.slot_ms.saturating_add(second_ms)).saturating_add(allowed_ms)
        };
        let crowding = self.0.iter().filter(counted_apart);
        crowding.map(|s| s.reach(second_ms)).max()
    }

    /// No send is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
#[path = "stall_tests.rs"]
mod tests;
