//! Due dates as schools see them: the day in England
//! ([`baton::dates`]), whether a pack is overdue, and whether its
//! receipt came on time. The due date itself comes from the daemon, which
//! holds the trust's calendar.

use time::Date;

pub use baton::dates::england_date;

/// Said under due dates when the trust has imported no calendar.
pub const NO_CALENDAR: &str =
    "the trust has no calendar in Baton: due dates count weekdays that are not bank holidays";

/// Today in England.
pub fn today() -> Date {
    baton::dates::england_today()
}

/// A due date from the daemon (`YYYY-MM-DD`, empty when unknown).
pub fn parse_due(text: &str) -> Option<Date> {
    baton::dates::parse_ymd(text).ok()
}

/// Overdue: not acknowledged, and today is after the due date.
pub fn overdue(due: Option<Date>, acknowledged: bool) -> bool {
    !acknowledged && due.is_some_and(|d| today() > d)
}

/// On time: received (the receipt's time, in England) on or before the
/// due date; `None` until acknowledged or when the due date is unknown.
pub fn on_time(due: Option<Date>, received_at_ms: Option<i64>) -> Option<bool> {
    Some(england_date(received_at_ms?) <= due?)
}

/// "2 packs overdue (oldest due 2026-11-13)", or `None` when none are.
pub fn overdue_line(dues: impl Iterator<Item = Date>) -> Option<String> {
    let dues: Vec<Date> = dues.collect();
    let oldest = dues.iter().min()?;
    Some(format!(
        "{} pack{} overdue (oldest due {})",
        dues.len(),
        if dues.len() == 1 { "" } else { "s" },
        baton::dates::format_ymd(*oldest)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use time::macros::{date, datetime};

    fn ms(t: OffsetDateTime) -> i64 {
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn on_time_and_overdue() {
        let due = Some(date!(2026 - 11 - 13));
        assert_eq!(
            on_time(due, Some(ms(datetime!(2026-11-13 16:00 UTC)))),
            Some(true)
        );
        assert_eq!(
            on_time(due, Some(ms(datetime!(2026-11-14 09:00 UTC)))),
            Some(false)
        );
        assert_eq!(on_time(due, None), None);
        assert_eq!(on_time(None, Some(1)), None);
        assert!(overdue(Some(date!(2020 - 01 - 01)), false));
        assert!(!overdue(Some(date!(2020 - 01 - 01)), true));
        assert!(!overdue(None, false));
        assert_eq!(
            overdue_line([date!(2026 - 11 - 20), date!(2026 - 11 - 13)].into_iter()).unwrap(),
            "2 packs overdue (oldest due 2026-11-13)"
        );
        assert_eq!(overdue_line(std::iter::empty()), None);
    }
}
