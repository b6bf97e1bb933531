//! OpenAI's `x-ratelimit-*` answer headers, telling a caller with its own RPM or TPM (its
//! client's, or its user's) how much of its minute is left.
//!
//! OpenAI sends them on every answer and tools pace themselves by them. Here they describe the
//! caller's own limits, never the upstream accounts' (shared by every client, and the
//! gateway's to manage). Of a client's and its user's meters, each kind (requests, tokens)
//! names the one with less left. "Remaining" is the limit less what the meter counts in any
//! minute window from now on (what a request admitted now must fit), as this isolate last saw
//! it (`credit::Holding::seen`): exact when the meter was just asked (near a limit every
//! request asks it); with credits held, what the meter last answered, their unspent
//! admissions counted as the caller's own, and each spent and each credit asked ahead since.
//! Through one isolate it never promises room the meter would refuse; another isolate's use
//! shows at this one's next answer from the meter. "Reset" is when all of
//! what is counted has left the window (OpenAI's "resets to its initial state"), as a Go
//! duration (`1.5s`, `1m0s`), as OpenAI writes it.

use crate::access::meter::MeterLimits;
use crate::window::{MinuteUse, Used};
use std::fmt::Write;

/// One meter's limits and its minute as this isolate saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The limits it judges by.
    pub limits: MeterLimits,
    /// Its minute, from this isolate.
    pub minute: MinuteUse,
}

/// The header names of the requests per minute: limit, remaining, reset.
pub const REQUESTS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];

/// The same for tokens per minute.
pub const TOKENS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// Per kind: its names, its limit, what of it is used, and when all of that is free again.
type Kind = (
    [&'static str; 3],
    fn(&MeterLimits) -> Option<u64>,
    fn(&Used) -> u64,
    fn(&MinuteUse) -> u64,
);

const KINDS: [Kind; 2] = [
    (REQUESTS, |l| l.rpm, |u| u.requests, |m| m.requests_clear_ms),
    (TOKENS, |l| l.tpm, |u| u.tokens, |m| m.tokens_clear_ms),
];

/// The headers for the meters seen (none for a kind no meter limits).
pub fn headers(seen: &[Seen], now_ms: u64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for ([limit_name, remaining_name, reset_name], limit_of, used_of, clear_of) in KINDS {
        let tightest = (seen.iter())
            .filter_map(|s| {
                let limit = limit_of(&s.limits)?;
                let left = limit.saturating_sub(used_of(&s.minute.used));
                Some((limit, left, clear_of(&s.minute)))
            })
            .min_by_key(|(_, left, _)| *left);
        if let Some((limit, left, clear_ms)) = tightest {
            out.push((limit_name, limit.to_string()));
            out.push((remaining_name, left.to_string()));
            out.push((reset_name, go_duration(clear_ms.saturating_sub(now_ms))));
        }
    }
    out
}

/// Milliseconds as Go prints a duration: `0s`, `250ms`, `1.5s`, `1m0s`, `1h2m3.04s`.
pub fn go_duration(ms: u64) -> String {
    if ms < 1_000 {
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    let (hours, minutes, seconds) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1_000 % 60);
    let mut text = match (hours, minutes) {
        (0, 0) => String::new(),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h{m}m"),
    };
    // The fraction of a second without its trailing zeros.
    let (mut fraction, mut digits) = (ms % 1_000, 3);
    while fraction > 0 && fraction % 10 == 0 {
        (fraction, digits) = (fraction / 10, digits - 1);
    }
    let _ = match fraction {
        0 => write!(text, "{seconds}s"),
        f => write!(text, "{seconds}.{f:0digits$}s"),
    };
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hints::parse_go_duration_ms;

    fn seen(rpm: Option<u64>, tpm: Option<u64>, requests: u64, tokens: u64) -> Seen {
        Seen {
            limits: MeterLimits {
                rpm,
                tpm,
                ..MeterLimits::default()
            },
            minute: MinuteUse {
                used: Used { requests, tokens },
                requests_clear_ms: 61_000,
                tokens_clear_ms: 62_500,
            },
        }
    }

    #[test]
    fn durations_read_as_go_writes_them_and_back() {
        for (ms, text) in [
            (0, "0s"),
            (1, "1ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (2_040, "2.04s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (61_500, "1m1.5s"),
            (3_600_000, "1h0m0s"),
            (3_723_040, "1h2m3.04s"),
        ] {
            assert_eq!(go_duration(ms), text);
        }
        for ms in (0..200_000).step_by(7).chain([86_400_000, 90_061_001]) {
            assert_eq!(parse_go_duration_ms(&go_duration(ms)), Some(ms), "{ms}");
        }
    }

    #[test]
    fn each_kind_names_the_meter_with_less_left() {
        // The client has 120 a minute with 100 used; its user 10 with 3 used; only the
        // client limits tokens.
        let client = seen(Some(120), Some(5_000), 100, 1_200);
        let user = seen(Some(10), None, 3, 400);
        let headers = headers(&[client, user], 1_000);
        let get = |name: &str| {
            let found = headers.iter().find(|(n, _)| *n == name);
            found.map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-ratelimit-limit-requests"), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests"), Some("7"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("1m0s"));
        assert_eq!(get("x-ratelimit-limit-tokens"), Some("5000"));
        assert_eq!(get("x-ratelimit-remaining-tokens"), Some("3800"));
        assert_eq!(get("x-ratelimit-reset-tokens"), Some("1m1.5s"));
        assert_eq!(headers.len(), 6);
        assert!(headers
            .iter()
            .all(|(n, _)| REQUESTS.contains(n) || TOKENS.contains(n)));
    }

    #[test]
    fn only_what_is_limited_is_said_and_nothing_goes_below_zero() {
        let over = seen(Some(5), None, 9, 0);
        let headers = headers(&[over], 70_000);
        assert_eq!(
            headers,
            vec![
                ("x-ratelimit-limit-requests", "5".to_string()),
                ("x-ratelimit-remaining-requests", "0".to_string()),
                ("x-ratelimit-reset-requests", "0s".to_string()),
            ]
        );
        assert!(super::headers(&[seen(None, None, 1, 1)], 0).is_empty());
        assert!(super::headers(&[], 0).is_empty());
    }
}
