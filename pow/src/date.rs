//! The hashcash date field: `YYMMDDhhmmss` in UTC, years 2000 to 2099, to and from Unix seconds.

/// Unix seconds of 2000-01-01T00:00:00Z, the earliest date a stamp can carry.
pub(crate) const MIN_UNIX: u64 = 946_684_800;
/// Unix seconds of 2099-12-31T23:59:59Z, the latest date a stamp can carry.
pub(crate) const MAX_UNIX: u64 = 4_102_444_799;

/// Formats Unix seconds as `YYMMDDhhmmss`; `None` outside 2000..=2099.
pub(crate) fn format(unix: u64) -> Option<String> {
    if !(MIN_UNIX..=MAX_UNIX).contains(&unix) {
        return None;
    }
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    Some(format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}",
        y - 2000,
        m,
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// Parses exactly 12 ASCII digits `YYMMDDhhmmss` into Unix seconds; `None` if not a real time.
pub(crate) fn parse(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 12 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |i: usize| u64::from(b[i] - b'0') * 10 + u64::from(b[i + 1] - b'0');
    let (yy, mo, dd, hh, mi, ss) = (two(0), two(2), two(4), two(6), two(8), two(10));
    if !(1..=12).contains(&mo) || dd == 0 || hh > 23 || mi > 59 || ss > 59 {
        return None;
    }
    let year = 2000 + yy as i64;
    if dd > days_in_month(year, mo) {
        return None;
    }
    let days = days_from_civil(year, mo as i64, dd as i64);
    Some(days as u64 * 86_400 + hh * 3600 + mi * 60 + ss)
}

fn days_in_month(year: i64, month: u64) -> u64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithm, for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format(MIN_UNIX).unwrap(), "000101000000");
        assert_eq!(format(MAX_UNIX).unwrap(), "991231235959");
        // 2026-11-23T12:00:00Z
        assert_eq!(format(1_795_435_200).unwrap(), "261123120000");
        assert_eq!(parse("261123120000"), Some(1_795_435_200));
        assert_eq!(
            parse("240229000000").map(format),
            Some(Some("240229000000".into()))
        );
        assert_eq!(parse("230229000000"), None);
        assert_eq!(parse("261323120000"), None);
        assert_eq!(parse("26112312000"), None);
        assert_eq!(parse("2611231200a0"), None);
        assert_eq!(format(MIN_UNIX - 1), None);
        assert_eq!(format(MAX_UNIX + 1), None);
    }

    proptest! {
        #[test]
        fn round_trips(unix in MIN_UNIX..=MAX_UNIX) {
            prop_assert_eq!(parse(&format(unix).unwrap()), Some(unix));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,16}") {
            let _ = parse(&s);
        }
    }
}
