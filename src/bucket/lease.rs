//! A bucket's record of admissions not yet settled: one lease, or a credit's admissions with a bit each (the bits shared with meters).

use serde::{Deserialize, Serialize};

/// An admission not yet settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Lease {
    /// The first (or only) lease id of the record.
    pub(super) id: u64,
    /// Leases in the record: 1, or a credit's admissions (ids `id..id + count`, at most 64).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub(super) count: u64,
    /// Which of them are settled (bit i: lease `id + i`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) settled: u64,
    /// Its slot and the tokens each holds in the windows (the estimate until settled).
    #[serde(default)]
    pub(super) at_ms: u64,
    #[serde(default)]
    pub(super) tokens: u64,
    /// The credit it was handed out in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) credit: Option<u64>,
    /// In flight until then; a committed stream has no end (None) until settled.
    pub(super) expires_ms: Option<u64>,
    /// When the record is dropped if never settled.
    #[serde(default)]
    pub(super) dropped_ms: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Lease {
    pub(super) fn live(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|e| e >= now_ms)
    }

    /// The bit of `lease` in `settled`, if the record holds it unsettled.
    pub(super) fn bit(&self, lease: u64) -> Option<u64> {
        unsettled_bit((self.id, self.count), self.settled, lease)
    }

    /// Leases of the record not settled yet.
    pub(super) fn open(&self) -> u64 {
        unsettled(self.count, self.settled)
    }
}

/// The bit of `lease` among the `count` leases from `first` (bit i: lease `first + i`), if it
/// is not set in `settled`: how a record of a credit's admissions (a bucket's or a meter's)
/// settles each once.
pub(crate) fn unsettled_bit((first, count): (u64, u64), settled: u64, lease: u64) -> Option<u64> {
    let i = lease.checked_sub(first).filter(|&i| i < count)?;
    let bit = 1u64.checked_shl(u32::try_from(i).ok()?)?;
    (settled & bit == 0).then_some(bit)
}

/// How many of `count` leases are not settled.
pub(crate) fn unsettled(count: u64, settled: u64) -> u64 {
    count.saturating_sub(u64::from(settled.count_ones()))
}
