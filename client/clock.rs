//! Due dates as schools see them: the day in England (Europe/London: GMT,
//! or BST from 01:00 UTC on the last Sunday of March to 01:00 UTC on the
//! last Sunday of October), whether a pack is overdue, and whether its
//! receipt came on time. The due date itself comes from the daemon, which
//! holds the trust's calendar.

use time::{Date, Month, OffsetDateTime, Weekday};

/// The last Sunday of `month` in `year`, at 01:00 UTC.
fn switch(year: i32, month: Month) -> Option<OffsetDateTime> {
    let mut d =
        Date::from_calendar_date(year, month, time::util::days_in_month(month, year)).ok()?;
    while d.weekday() != Weekday::Sunday {
        d = d.previous_day()?;
    }
    Some(d.with_hms(1, 0, 0).ok()?.assume_utc())
}

/// The date in England at `ms` since the Unix epoch.
pub fn england_date(ms: i64) -> Date {
    let Ok(utc) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return Date::MIN;
    };
    let summer = match (
        switch(utc.year(), Month::March),
        switch(utc.year(), Month::October),
    ) {
        (Some(start), Some(end)) => start <= utc && utc < end,
        _ => false,
    };
    if summer {
        (utc + time::Duration::hours(1)).date()
    } else {
        utc.date()
    }
}

/// Today in England.
pub fn today() -> Date {
    england_date(crate::output::now_ms())
}

/// A due date from the daemon (`YYYY-MM-DD`, empty when unknown).
pub fn parse_due(text: &str) -> Option<Date> {
    baton::pack::parse_ymd(text).ok()
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
        baton::pack::format_ymd(*oldest)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn ms(t: OffsetDateTime) -> i64 {
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn england_is_an_hour_ahead_in_summer_only() {
        // 23:30 UTC on a July evening is already the next day in England.
        assert_eq!(
            england_date(ms(datetime!(2026-07-22 23:30 UTC))),
            date!(2026 - 07 - 23)
        );
        // In winter it is not.
        assert_eq!(
            england_date(ms(datetime!(2026-12-01 23:30 UTC))),
            date!(2026 - 12 - 01)
        );
        // BST begins 01:00 UTC on 29 March 2026 and ends 01:00 UTC on 25 October.
        assert_eq!(
            england_date(ms(datetime!(2026-03-29 00:30 UTC))),
            date!(2026 - 03 - 29)
        );
        assert_eq!(
            england_date(ms(datetime!(2026-10-24 23:30 UTC))),
            date!(2026 - 10 - 25)
        );
        assert_eq!(
            england_date(ms(datetime!(2026-10-25 23:30 UTC))),
            date!(2026 - 10 - 25)
        );
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
