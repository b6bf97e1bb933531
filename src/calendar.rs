//! UTC calendar arithmetic on day numbers (days since 1970-01-01): months for budgets,
//! dates for reports.

/// One day, in ms.
pub const DAY_MS: u64 = 86_400_000;

/// `YYYY-MM-DD` of a day number.
pub fn date(day: u64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time in ms (whole seconds, UTC).
pub fn iso_time(ms: u64) -> String {
    let secs = (ms % DAY_MS) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{}T{h:02}:{m:02}:{s:02}Z", date(ms / DAY_MS))
}

/// Month number (year x 12 + month - 1) of a UTC day number (days since 1970-01-01).
pub fn month_of_day(day: u64) -> u64 {
    let (y, m, _) = civil_from_days(day);
    y * 12 + (m - 1)
}

/// Start of a month number, ms since the epoch.
pub fn month_start_ms(month: u64) -> u64 {
    days_from_civil(month / 12, month % 12 + 1).saturating_mul(DAY_MS)
}

/// (year, month 1-12, day 1-31) of a day number (Howard Hinnant's algorithm, days >= 0).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Day number of the first of (year, month 1-12).
pub fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y.saturating_sub(1) } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_arithmetic_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(1_795_996_800_000 / DAY_MS), (2026, 11, 30));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for day in (0..80_000).step_by(7) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m) + d - 1, day, "{y}-{m}-{d}");
        }
        // December's successor is January of the next year.
        let dec = month_of_day(1_795_996_800_000 / DAY_MS + 1);
        assert_eq!(month_start_ms(dec + 1), 1_798_761_600_000); // 2027-01-01
    }

    #[test]
    fn dates_print_as_iso() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_996_800_000 / DAY_MS), "2026-11-30");
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso_time(1_795_996_800_000 + 3_723_999),
            "2026-11-30T01:02:03Z"
        );
    }
}
