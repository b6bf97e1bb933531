//! The evidence a provider's quota-increase form asks for, for one bucket: per UTC day, peak
//! and p95 RPM and TPM against the limit, minutes spent at the limit, upstream 429s the
//! gateway absorbed, requests turned away (rotated or downgraded) or scheduled because of the
//! limit, requests downgraded and what that saved or cost, 429s passed to clients, tokens and
//! cost. As JSON rows or CSV.

use crate::calendar::{self, DAY_MS};
use crate::history::{self, Period, Rollup};
use crate::window::Limits;
use serde::Serialize;

/// One day of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Requests given a slot.
    pub admitted: u64,
    /// Served.
    pub served: u64,
    /// Given a slot later than asked, because of the limit.
    pub scheduled: u64,
    /// Their average wait, ms.
    pub avg_wait_ms: u64,
    /// Turned away by the limit: sent to another account or down the model chain.
    pub turned_away: u64,
    /// Requests meant for this model served by a lower one (this bucket their first choice).
    pub downgraded: u64,
    /// What those downgrades saved (negative: cost more) against this model's price, USD.
    pub downgrade_saved_usd: f64,
    /// 429s the gateway answered clients for want of capacity (this bucket first choice).
    pub passed_429s: u64,
    /// Upstream 429s absorbed (window limits and surge protection)...
    pub upstream_429s: u64,
    /// ...of which for a token limit...
    pub upstream_429s_tokens: u64,
    /// ...and of surge protection (the rest: request limits and throttles).
    pub upstream_429s_surge: u64,
    /// Failures without a limit signal (5xx, network).
    pub failed: u64,
    /// Highest requests in a sliding minute.
    pub peak_rpm: u64,
    /// 95th percentile of the minutes' peak RPM (every minute of the day counted).
    pub p95_rpm: u64,
    /// The configured RPM.
    pub rpm_limit: Option<u64>,
    /// Highest tokens in a sliding minute.
    pub peak_tpm: u64,
    /// 95th percentile of the minutes' peak TPM.
    pub p95_tpm: u64,
    /// The configured TPM.
    pub tpm_limit: Option<u64>,
    /// Minutes whose peak reached 95 % of a limit.
    pub minutes_at_limit: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Of those, read from the upstream's prompt cache (billed at its cache price).
    pub cached_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cost, USD.
    pub cost_usd: f64,
}

/// The rollups of the last `days` UTC days up to `now_ms`, oldest first, from the stored
/// days and the minutes of the last 24 hours (today's summary comes from its minutes). Days
/// with no traffic are rollups of zeros.
fn rollups(stored_days: &[Period], minutes: &[Period], now_ms: u64, days: u64) -> Vec<Period> {
    let today = now_ms / DAY_MS;
    let first = (today + 1).saturating_sub(days.max(1));
    (first..=today)
        .map(|day| {
            let mut rollup = stored_days
                .iter()
                .find(|(d, _)| *d == day)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            if day == today {
                let (from, to) = history::day_minutes(day);
                let of_day: Vec<Rollup> = minutes
                    .iter()
                    .filter(|(m, _)| (from..to).contains(m))
                    .map(|(_, r)| r.clone())
                    .collect();
                history::summarise_day(&mut rollup, &of_day);
            }
            (day, rollup)
        })
        .collect()
}

/// A bucket's last `days` days (see `rollups`).
pub fn days(
    stored_days: &[Period],
    minutes: &[Period],
    limits: &Limits,
    now_ms: u64,
    days: u64,
) -> Vec<Day> {
    rollups(stored_days, minutes, now_ms, days)
        .iter()
        .map(|(day, r)| Day {
            date: calendar::date(*day),
            admitted: r.admitted,
            served: r.ok,
            scheduled: r.scheduled,
            avg_wait_ms: r.wait_ms.checked_div(r.scheduled).unwrap_or(0),
            turned_away: r.denied,
            downgraded: r.downgraded,
            downgrade_saved_usd: (r.downgrade_saved_micro_usd as f64
                - r.downgrade_lost_micro_usd as f64)
                / 1e6,
            passed_429s: r.passed_429,
            upstream_429s: r.rate_limited + r.burst,
            upstream_429s_tokens: r.rate_limited_tokens,
            upstream_429s_surge: r.burst,
            failed: r.failed,
            peak_rpm: r.peak_rpm,
            p95_rpm: r.p95_rpm,
            rpm_limit: limits.rpm,
            peak_tpm: r.peak_tpm,
            p95_tpm: r.p95_tpm,
            tpm_limit: limits.tpm,
            minutes_at_limit: r.minutes_at_limit,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost_micro_usd as f64 / 1e6,
        })
        .collect()
}

/// One day of a client's (or a user's) usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Requests admitted.
    pub requests: u64,
    /// Of those, given a later slot: they waited for room in its own RPM/TPM...
    pub scheduled: u64,
    /// ...this long on average (ms).
    pub avg_wait_ms: u64,
    /// Refused for its own RPM/TPM.
    pub rate_limited: u64,
    /// Refused for a spent budget.
    pub over_budget: u64,
    /// Tokens used.
    pub tokens: u64,
    /// What it cost, USD.
    pub cost_usd: f64,
    /// Highest requests in a sliding minute, and the 95th percentile over the day's minutes.
    pub peak_rpm: u64,
    /// See `peak_rpm`.
    pub p95_rpm: u64,
    /// Highest tokens in a sliding minute.
    pub peak_tpm: u64,
}

/// A client's last `days` days, from its meter's history (see `meter::Totals::as_counters`
/// for how its totals map onto a rollup).
pub fn client_days(
    stored_days: &[Period],
    minutes: &[Period],
    now_ms: u64,
    days: u64,
) -> Vec<ClientDay> {
    rollups(stored_days, minutes, now_ms, days)
        .iter()
        .map(|(day, r)| ClientDay {
            date: calendar::date(*day),
            requests: r.admitted,
            scheduled: r.scheduled,
            avg_wait_ms: r.wait_ms.checked_div(r.scheduled).unwrap_or(0),
            rate_limited: r.rate_limited,
            over_budget: r.denied,
            tokens: r.prompt_tokens,
            cost_usd: r.cost_micro_usd as f64 / 1e6,
            peak_rpm: r.peak_rpm,
            p95_rpm: r.p95_rpm,
            peak_tpm: r.peak_tpm,
        })
        .collect()
}

/// Rows as CSV: a header line of their field names, then their values (numbers, and dates:
/// nothing to quote). Works for any row that serialises as a flat object.
pub fn csv<T: Serialize>(header: &[&str], rows: &[T]) -> String {
    let mut out = header.join(",");
    out.push('\n');
    for row in rows {
        let value = serde_json::to_value(row).unwrap_or_default();
        let cells: Vec<String> = header
            .iter()
            .map(|h| match value.get(*h) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The columns of a bucket's report, in order.
pub const DAY_COLUMNS: [&str; 24] = [
    "date",
    "admitted",
    "served",
    "scheduled",
    "avg_wait_ms",
    "turned_away",
    "downgraded",
    "downgrade_saved_usd",
    "passed_429s",
    "upstream_429s",
    "upstream_429s_tokens",
    "upstream_429s_surge",
    "failed",
    "peak_rpm",
    "p95_rpm",
    "rpm_limit",
    "peak_tpm",
    "p95_tpm",
    "tpm_limit",
    "minutes_at_limit",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost_usd",
];

/// The columns of a client's report, in order.
pub const CLIENT_COLUMNS: [&str; 11] = [
    "date",
    "requests",
    "scheduled",
    "avg_wait_ms",
    "rate_limited",
    "over_budget",
    "tokens",
    "cost_usd",
    "peak_rpm",
    "p95_rpm",
    "peak_tpm",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30T00:00:00Z.
    const T0: u64 = 1_795_996_800_000;

    #[test]
    fn days_line_up_with_the_calendar_and_today_is_summarised_from_its_minutes() {
        let limits = Limits {
            rpm: Some(10),
            tpm: Some(1_000),
            ..Limits::default()
        };
        let day0 = T0 / DAY_MS;
        let yesterday = Rollup {
            admitted: 50,
            ok: 48,
            scheduled: 10,
            wait_ms: 2_500,
            denied: 7,
            downgraded: 2,
            downgrade_saved_micro_usd: 300_000,
            downgrade_lost_micro_usd: 50_000,
            passed_429: 1,
            rate_limited: 2,
            burst: 1,
            peak_rpm: 10,
            p95_rpm: 9,
            minutes_at_limit: 30,
            prompt_tokens: 4_000,
            cached_tokens: 3_000,
            cost_micro_usd: 1_500_000,
            ..Rollup::default()
        };
        let (first, _) = history::day_minutes(day0);
        // Today: 100 minutes at 10 rpm (p95 10, at the limit), one more at 3.
        let mut minutes: Vec<Period> = (0..100)
            .map(|i| {
                (
                    first + i,
                    Rollup {
                        ok: 10,
                        peak_rpm: 10,
                        minutes_at_limit: 1,
                        ..Rollup::default()
                    },
                )
            })
            .collect();
        minutes.push((
            first - 5,
            Rollup {
                peak_rpm: 99,
                ..Rollup::default()
            },
        )); // yesterday's
        let today = Rollup {
            ok: 1_000,
            peak_rpm: 10,
            ..Rollup::default()
        };
        let rows = days(
            &[(day0 - 1, yesterday), (day0, today)],
            &minutes,
            &limits,
            T0 + 3_600_000,
            3,
        );
        let dates: Vec<&str> = rows.iter().map(|d| d.date.as_str()).collect();
        assert_eq!(dates, ["2026-11-28", "2026-11-29", "2026-11-30"]);
        assert_eq!(rows[0].served, 0);
        let y = &rows[1];
        assert_eq!(
            (y.served, y.avg_wait_ms, y.turned_away, y.upstream_429s),
            (48, 250, 7, 3)
        );
        assert_eq!(
            (y.p95_rpm, y.rpm_limit, y.minutes_at_limit, y.cost_usd),
            (9, Some(10), 30, 1.5)
        );
        let t = &rows[2];
        assert_eq!((t.served, t.p95_rpm, t.minutes_at_limit), (1_000, 10, 100));
        let text = csv(&DAY_COLUMNS, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("date,admitted,served"));
        assert_eq!(
            lines[2],
            "2026-11-29,50,48,10,250,7,2,0.25,1,3,0,1,0,10,9,10,0,0,1000,30,4000,3000,0,1.5"
        );
        assert!(lines.iter().all(|l| l.split(',').count() == 24));
        let clients = client_days(&[], &minutes, T0 + 3_600_000, 1);
        assert_eq!((clients[0].requests, clients[0].p95_rpm), (0, 10));
        let text = csv(&CLIENT_COLUMNS, &clients);
        assert_eq!(
            text.lines().next(),
            Some(
                "date,requests,scheduled,avg_wait_ms,rate_limited,over_budget,tokens,cost_usd,peak_rpm,p95_rpm,peak_tpm"
            )
        );
    }
}
