//! What an upstream outcome means for a bucket: how the lease settles, and whether it makes
//! the bucket busy for everyone (the isolate cache keeps only such facts).

use super::SettleOutcome;
use crate::classify::{LimitKind, Outcome, ParkScope};
use crate::openai::Usage;

impl SettleOutcome {
    /// A served request with the usage the upstream reported and what it cost.
    pub fn served(usage: Usage, cost_micro_usd: u64) -> SettleOutcome {
        SettleOutcome::Ok {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            cost_micro_usd,
        }
    }

    /// How an attempt that did not serve the client settles its lease.
    pub fn of_failure(outcome: &Outcome) -> SettleOutcome {
        match outcome {
            Outcome::Cooldown {
                kind,
                cooldown_ms,
                hinted,
            } => SettleOutcome::Cooldown {
                ms: *cooldown_ms,
                // ASCII names: `to_lowercase` would pull in the Unicode case tables (10 KB gzip).
                kind: format!("{kind:?}").to_ascii_lowercase(),
                hinted: *hinted,
            },
            Outcome::Unavailable { cooldown_ms } => SettleOutcome::Cooldown {
                ms: *cooldown_ms,
                kind: "unavailable".into(),
                hinted: true,
            },
            Outcome::Burst { .. } => SettleOutcome::Burst,
            Outcome::Park {
                reason,
                for_ms,
                scope,
            } => SettleOutcome::Park {
                reason: reason.clone(),
                for_ms: *for_ms,
                account: *scope == ParkScope::Account,
            },
            // Neither counted upstream: a refused key or a request too large never ran.
            Outcome::KeyRefused { .. } | Outcome::TooLarge => SettleOutcome::Released,
            Outcome::Success
            | Outcome::Retry { .. }
            | Outcome::Unsupported
            | Outcome::Client(_) => SettleOutcome::Failed,
        }
    }
}

/// What an outcome says about its bucket for every request, for the isolate cache: busy until
/// then (inner None: parked with no end). None when it says nothing about the bucket (a
/// refused key, one request too large, a server error, the client's own mistake).
pub fn busy_until(outcome: &Outcome, now_ms: u64) -> Option<Option<u64>> {
    match outcome {
        // The bucket decides how long a window limit with no hint lasts (a first one in a
        // minute is taken for jitter); its next answer says.
        Outcome::Cooldown {
            hinted: false,
            kind: LimitKind::Requests | LimitKind::Tokens,
            ..
        } => None,
        Outcome::Cooldown {
            cooldown_ms: ms, ..
        }
        | Outcome::Unavailable { cooldown_ms: ms } => Some(Some(now_ms.saturating_add(*ms))),
        Outcome::Park { for_ms, .. } => Some(for_ms.map(|ms| now_ms.saturating_add(ms))),
        // A surge 429 slows the bucket (its pacing), it does not close it.
        Outcome::Success
        | Outcome::Burst { .. }
        | Outcome::KeyRefused { .. }
        | Outcome::Retry { .. }
        | Outcome::TooLarge
        | Outcome::Unsupported
        | Outcome::Client(_) => None,
    }
}
