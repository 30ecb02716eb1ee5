//! Dates as schools count them: `YYYY-MM-DD` on the wire and in files, and
//! the calendar day in England (Europe/London: GMT, or BST from 01:00 UTC
//! on the last Sunday of March to 01:00 UTC on the last Sunday of October),
//! without a time-zone database.

use time::{Date, Month, OffsetDateTime, Weekday};

/// A date as `YYYY-MM-DD`.
pub fn format_ymd(d: Date) -> String {
    d.format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// A `YYYY-MM-DD` date (surrounding spaces allowed).
pub fn parse_ymd(text: &str) -> Result<Date, time::error::Parse> {
    Date::parse(
        text.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
}

/// The last Sunday of `month` in `year`, at 01:00 UTC.
fn switch(year: i32, month: Month) -> Option<OffsetDateTime> {
    let mut d =
        Date::from_calendar_date(year, month, time::util::days_in_month(month, year)).ok()?;
    while d.weekday() != Weekday::Sunday {
        d = d.previous_day()?;
    }
    Some(d.with_hms(1, 0, 0).ok()?.assume_utc())
}

/// The time in England (GMT or BST) at `ms` since the Unix epoch.
fn england_time(ms: i64) -> Option<OffsetDateTime> {
    let utc = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    let summer = match (
        switch(utc.year(), Month::March),
        switch(utc.year(), Month::October),
    ) {
        (Some(start), Some(end)) => start <= utc && utc < end,
        _ => false,
    };
    Some(if summer {
        utc + time::Duration::hours(1)
    } else {
        utc
    })
}

/// The date in England at `ms` since the Unix epoch.
pub fn england_date(ms: i64) -> Date {
    england_time(ms).map_or(Date::MIN, OffsetDateTime::date)
}

/// The date and time in England at `ms` since the Unix epoch, to the
/// minute: `2026-07-20 14:05`.
pub fn england_datetime(ms: i64) -> String {
    match england_time(ms) {
        Some(t) => format!("{} {:02}:{:02}", format_ymd(t.date()), t.hour(), t.minute()),
        None => ms.to_string(),
    }
}

/// Today in England.
pub fn england_today() -> Date {
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    england_date(i64::try_from(now).unwrap_or(0))
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
}
