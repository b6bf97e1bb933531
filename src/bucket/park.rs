//! A bucket's park after a hard failure, with its one half-open probe at a time.

use super::{Lease, SettleOutcome};
use serde::{Deserialize, Serialize};

/// A park after a hard failure: closed until `until_ms` (None: until an operator clears it),
/// then open to exactly one probe at a time, whose outcome unparks or parks again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Park {
    pub(super) reason: String,
    pub(super) until_ms: Option<u64>,
    /// The park length, to park again for as long when a probe fails.
    for_ms: Option<u64>,
    /// The lease of the probe out, if any.
    #[serde(default)]
    pub(super) probe: Option<u64>,
    /// Whose park it is (kept from the park that began it, whatever parks merge into it).
    #[serde(default, skip_serializing_if = "ParkOf::is_bucket")]
    pub(super) of: ParkOf,
}

/// Whose park it is: the operator is told of an account's once, by the bucket that learned it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParkOf {
    /// This bucket's own.
    #[default]
    Bucket,
    /// Its whole account's, learned by this bucket (which tells of it).
    Account,
    /// Its whole account's, heard from another bucket of the account (which tells of it).
    AccountHeard,
}

impl ParkOf {
    fn is_bucket(&self) -> bool {
        *self == ParkOf::Bucket
    }
}

/// What a park lets through now.
pub(super) enum Gate {
    /// Nothing: closed until then (None: until cleared).
    Closed(Option<u64>),
    /// A probe is out; its lease is in flight until then.
    ProbeOut(Option<u64>),
    /// The next request is the probe.
    Probe,
}

impl Park {
    pub(super) fn new(now_ms: u64, reason: &str, for_ms: Option<u64>, of: ParkOf) -> Park {
        Park {
            reason: reason.to_string(),
            until_ms: for_ms.map(|d| now_ms.saturating_add(d)),
            for_ms,
            probe: None,
            of,
        }
    }

    /// `self` replaced by `newer`: a manual park is never shortened by a timed one, and a timed
    /// park only ever lengthens. Whose it is stays as it began (operators were told then).
    pub(super) fn merged(self, newer: Park) -> Park {
        match (self.until_ms, newer.until_ms) {
            (None, Some(_)) => self,
            (Some(a), Some(b)) => Park {
                until_ms: Some(a.max(b)),
                of: self.of,
                ..newer
            },
            _ => Park {
                of: self.of,
                ..newer
            },
        }
    }

    pub(super) fn gate(&self, now_ms: u64, leases: &[Lease]) -> Gate {
        match self.until_ms {
            Some(until) if now_ms >= until => {
                let probe = self
                    .probe
                    .and_then(|id| leases.iter().find(|l| l.bit(id).is_some()));
                match probe.filter(|l| l.live(now_ms)) {
                    Some(l) => Gate::ProbeOut(l.expires_ms),
                    None => Gate::Probe,
                }
            }
            until => Gate::Closed(until),
        }
    }

    /// The probe's lease ended: true when it proved the upstream works again (unpark).
    pub(super) fn probe_ended(&mut self, now_ms: u64, outcome: &SettleOutcome) -> bool {
        self.probe = None;
        match outcome {
            SettleOutcome::Ok { .. } => true,
            // Never reached the upstream, or its answer went unread: the next request probes.
            SettleOutcome::Released | SettleOutcome::Cancelled => false,
            _ => {
                self.until_ms = self.for_ms.map(|d| now_ms.saturating_add(d));
                false
            }
        }
    }
}
