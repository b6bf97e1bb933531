//! Reads the waits an upstream asks for: `retry-after-ms`, `Retry-After`, `x-ratelimit-reset-*`,
//! "try again in 644ms" in the message, Gemini's `retryDelay`.

/// A day: daily quotas reset within it, the longest documented window.
pub const DAILY_MS: u64 = 24 * 3_600_000;
/// The longest wait an upstream's hint may impose: a bogus hint cannot park a bucket for years.
pub const MAX_HINT_MS: u64 = DAILY_MS;

const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;

/// The wait an upstream asked for, from `retry-after-ms`, `retry-after` (seconds or HTTP date),
/// `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (Go durations: 12ms, 1s, 6m0s, 1h2m3.5s),
/// or the message text ("Please try again in 644ms." / "in 1.5s" / "in 20s"), or Gemini's `retryDelay` ("34s").
///
/// Sources are tried in that order; an unreadable one is skipped. Of the reset headers, those whose
/// `x-ratelimit-remaining-*` is 0 count (the longest wins); all of them when no remaining header
/// is present. `retryDelay` is found in the message text (pass the raw body to use it). The
/// result is capped at `MAX_HINT_MS`; a date in the past gives 0.
pub fn retry_hint_ms(
    headers: &[(String, String)],
    message: Option<&str>,
    now_ms: u64,
) -> Option<u64> {
    let hint = header(headers, "retry-after-ms")
        .and_then(decimal_ms)
        .or_else(|| {
            let v = header(headers, "retry-after")?;
            decimal_ns(v, NS_PER_S)
                .map(ns_to_ms)
                .or_else(|| http_date_ms(v).map(|at| at.saturating_sub(now_ms)))
        })
        .or_else(|| ratelimit_reset_ms(headers))
        .or_else(|| message.and_then(message_hint_ms));
    hint.map(|ms| ms.min(MAX_HINT_MS))
}

/// A decimal count of milliseconds, as in `retry-after-ms: 644.2` or `req-cost-time: 523`; a
/// fraction rounds up. Parsed without floats: `str::parse::<f64>` alone would add about 14 KB
/// (gzip) of tables and code to the Worker bundle.
pub fn decimal_ms(value: &str) -> Option<u64> {
    decimal_ns(value.trim(), NS_PER_MS).map(ns_to_ms)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn ratelimit_reset_ms(headers: &[(String, String)]) -> Option<u64> {
    let (mut exhausted, mut any, mut saw_remaining) = (None, None, false);
    for kind in ["requests", "tokens"] {
        let remaining = header(headers, &format!("x-ratelimit-remaining-{kind}"))
            .and_then(|v| v.parse::<u64>().ok());
        saw_remaining |= remaining.is_some();
        let reset = header(headers, &format!("x-ratelimit-reset-{kind}")).and_then(|v| {
            parse_go_duration_ms(v).or_else(|| decimal_ns(v, NS_PER_S).map(ns_to_ms))
        });
        if let Some(ms) = reset {
            any = any.max(Some(ms));
            if remaining == Some(0) {
                exhausted = exhausted.max(Some(ms));
            }
        }
    }
    if saw_remaining {
        exhausted
    } else {
        any
    }
}

/// A wait named in free text: "try again in 644ms", "retry in 34.6s", "try again in 20 seconds",
/// or a JSON `"retryDelay": "34s"`.
fn message_hint_ms(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    ["try again in ", "retry in ", "retrydelay"]
        .iter()
        .find_map(|marker| {
            lower
                .split(marker)
                .skip(1)
                .find_map(|after| duration_at(after.trim_start_matches(['"', '\'', ':', ' '])))
        })
}

/// The duration at the start of `text`: a Go duration, or a number and a unit word.
fn duration_at(text: &str) -> Option<u64> {
    let punct: &[char] = &['.', ',', ';', ')', '}', ']', '"', '\''];
    let mut words = text.split_whitespace();
    let first = words.next()?.trim_end_matches(punct);
    if let Some(ms) = parse_go_duration_ms(first) {
        return Some(ms);
    }
    let unit_ns = match words.next()?.trim_end_matches(punct) {
        "ms" | "millisecond" | "milliseconds" => NS_PER_MS,
        "s" | "sec" | "secs" | "second" | "seconds" => NS_PER_S,
        "min" | "mins" | "minute" | "minutes" => 60 * NS_PER_S,
        "h" | "hour" | "hours" => 3_600 * NS_PER_S,
        _ => return None,
    };
    decimal_ns(first, unit_ns).map(ns_to_ms)
}

/// Parses a Go-style duration (`12ms`, `1s`, `6m0s`, `1.5s`, `1h2m3s`) to milliseconds.
///
/// Units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; a bare `0` is zero; negative or unitless values
/// are `None`. Sub-millisecond remainders round up.
pub fn parse_go_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at_checked(num_len)?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at_checked(unit_len)?;
        let unit_ns = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => NS_PER_MS,
            "s" => NS_PER_S,
            "m" => 60 * NS_PER_S,
            "h" => 3_600 * NS_PER_S,
            _ => return None,
        };
        total = total.checked_add(decimal_ns(num, unit_ns)?)?;
        rest = next;
    }
    u64::try_from(total.div_ceil(NS_PER_MS)).ok()
}

/// `12`, `1.5` or `.5` times `unit_ns` (a power of ten times 1, 6 or 36), exactly.
fn decimal_ns(s: &str, unit_ns: u128) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let mut ns = match int {
        "" => 0,
        _ => int.parse::<u128>().ok()?.checked_mul(unit_ns)?,
    };
    let mut scale = unit_ns;
    for b in frac.bytes() {
        scale /= 10;
        ns = ns.checked_add(u128::from(b - b'0') * scale)?;
    }
    Some(ns)
}

fn ns_to_ms(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(NS_PER_MS)).unwrap_or(u64::MAX)
}

/// Unix milliseconds of an IMF-fixdate, `Wed, 21 Oct 2015 07:28:00 GMT`.
fn http_date_ms(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) || *h > 23 || *m > 59 || *sec > 60
    {
        return None;
    }
    // Days from civil (H. Hinnant), with March as the first month of the year.
    let month = i64::try_from(month).ok()? + 1;
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + h * 3_600 + m * 60 + sec;
    u64::try_from(secs).ok()?.checked_mul(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn retry_hints_from_every_source() {
        let now = 1_445_412_480_000 - 30_000; // 30 s before Wed, 21 Oct 2015 07:28:00 GMT.
        let hint = |pairs: &[(&str, &str)], msg: Option<&str>| retry_hint_ms(&h(pairs), msg, now);
        assert_eq!(hint(&[("retry-after-ms", "644.2")], None), Some(645));
        assert_eq!(hint(&[("Retry-After", " 20 ")], None), Some(20_000));
        assert_eq!(hint(&[("retry-after", "1.5")], None), Some(1_500));
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            Some(30_000)
        );
        assert_eq!(
            hint(&[("retry-after", "Tue, 20 Oct 2015 07:28:00 GMT")], None),
            Some(0)
        );
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 PST")], None),
            None
        );
        assert_eq!(
            hint(&[("retry-after", "99999999")], None),
            Some(MAX_HINT_MS)
        );
        let reset = [
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hint(&reset, None), Some(360_000));
        let req_out = [
            reset[0],
            reset[1],
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "149984"),
        ];
        assert_eq!(hint(&req_out, None), Some(1_000));
        let none_out = [
            reset[0],
            reset[1],
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "5"),
        ];
        assert_eq!(
            hint(&none_out, Some("Please try again in 644ms.")),
            Some(644)
        );
        for (msg, want) in [
            ("Please try again in 644ms.", Some(644)),
            ("Limit 3. Please try again in 1.5s. Visit", Some(1_500)),
            ("Please try again in 20s.", Some(20_000)),
            ("try again in 6m0s", Some(360_000)),
            ("Please retry in 34.690215072s.", Some(34_691)),
            ("please try again in 20 seconds", Some(20_000)),
            (r#"{"@type":"RetryInfo","retryDelay": "34s"}"#, Some(34_000)),
            (
                "Requests rate limit exceeded, please try again later.",
                None,
            ),
            ("", None),
        ] {
            assert_eq!(hint(&[], Some(msg)), want, "{msg}");
        }
        // Precedence: retry-after-ms > retry-after > x-ratelimit-reset > message.
        let all = [
            ("retry-after-ms", "100"),
            ("retry-after", "2"),
            ("x-ratelimit-reset-tokens", "3s"),
        ];
        let msg = Some("try again in 4s");
        assert_eq!(hint(&all, msg), Some(100));
        assert_eq!(hint(&all[1..], msg), Some(2_000));
        assert_eq!(hint(&all[2..], msg), Some(3_000));
        assert_eq!(hint(&[], msg), Some(4_000));
        assert_eq!(hint(&[("retry-after-ms", "soon")], msg), Some(4_000));
    }

    #[test]
    fn decimal_milliseconds() {
        assert_eq!(decimal_ms(" 523 "), Some(523));
        assert_eq!(decimal_ms("12.25"), Some(13));
        assert_eq!(decimal_ms(".5"), Some(1));
        for bad in ["", ".", "-1", "1e3", "12ms", "NaN"] {
            assert_eq!(decimal_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_go_durations() {
        for (s, want) in [
            ("12ms", Some(12)),
            ("1s", Some(1_000)),
            ("6m0s", Some(360_000)),
            ("1.5s", Some(1_500)),
            ("1h2m3s", Some(3_723_000)),
            ("1h2m3.5s", Some(3_723_500)),
            ("2m59.56s", Some(179_560)),
            ("0.3s", Some(300)),
            ("500us", Some(1)),
            ("0", Some(0)),
            ("0s", Some(0)),
            ("1.5", None),
            ("-1s", None),
            ("", None),
            ("1x", None),
            ("s", None),
            ("1.2.3s", None),
            ("99999999999999999999h", None),
        ] {
            assert_eq!(parse_go_duration_ms(s), want, "{s}");
        }
    }
}
