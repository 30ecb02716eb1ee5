//! England and Wales bank holidays, by the standing rules (Banking and
//! Financial Dealings Act 1971 and the royal proclamations that keep them),
//! with the rare one-off and moved days listed: nothing is fetched.

use std::sync::{Mutex, PoisonError};

use time::{Date, Duration, Month, Weekday};

/// Days added by proclamation, once.
const ONE_OFF: &[(i32, Month, u8)] = &[
    (1999, Month::December, 31),
    (2002, Month::June, 3),
    (2011, Month::April, 29),
    (2012, Month::June, 5),
    (2022, Month::June, 3),
    (2022, Month::September, 19),
    (2023, Month::May, 8),
];

/// A month and day.
type MonthDay = (Month, u8);

/// Rule days moved by proclamation: (year, the rule's date, the day instead).
const MOVED: &[(i32, MonthDay, MonthDay)] = &[
    (1995, (Month::May, 1), (Month::May, 8)),
    (2002, (Month::May, 27), (Month::June, 4)),
    (2012, (Month::May, 28), (Month::June, 4)),
    (2020, (Month::May, 4), (Month::May, 8)),
    (2022, (Month::May, 30), (Month::June, 2)),
];

fn date(year: i32, month: Month, day: u8) -> Option<Date> {
    Date::from_calendar_date(year, month, day).ok()
}

/// Easter Sunday (Gregorian), by the anonymous algorithm (Meeus/Jones/Butcher).
pub fn easter(year: i32) -> Option<Date> {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    date(year, month, u8::try_from(day).ok()?)
}

/// The first `weekday` of a month.
fn first(year: i32, month: Month, weekday: Weekday) -> Option<Date> {
    let mut d = date(year, month, 1)?;
    while d.weekday() != weekday {
        d = d.next_day()?;
    }
    Some(d)
}

/// The last `weekday` of a month.
fn last(year: i32, month: Month, weekday: Weekday) -> Option<Date> {
    let mut d = date(year, month, time::util::days_in_month(month, year))?;
    while d.weekday() != weekday {
        d = d.previous_day()?;
    }
    Some(d)
}

/// The next weekday on or after `d` that is not already taken.
fn substitute(mut d: Date, taken: &[Date]) -> Date {
    while matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) || taken.contains(&d) {
        d += Duration::days(1);
    }
    d
}

/// Every England and Wales bank holiday of `year`, sorted.
pub fn bank_holidays(year: i32) -> Vec<Date> {
    let mut days = Vec::new();
    if let Some(new_year) = date(year, Month::January, 1) {
        days.push(substitute(new_year, &[]));
    }
    if let Some(easter) = easter(year) {
        days.push(easter - Duration::days(2));
        days.push(easter + Duration::days(1));
    }
    days.extend(first(year, Month::May, Weekday::Monday));
    days.extend(last(year, Month::May, Weekday::Monday));
    days.extend(last(year, Month::August, Weekday::Monday));
    if let (Some(christmas), Some(boxing)) = (
        date(year, Month::December, 25),
        date(year, Month::December, 26),
    ) {
        let christmas = substitute(christmas, &[]);
        days.push(christmas);
        days.push(substitute(boxing, &[christmas]));
    }
    for (y, rule, instead) in MOVED {
        if *y == year
            && let (Some(rule), Some(instead)) =
                (date(year, rule.0, rule.1), date(year, instead.0, instead.1))
        {
            days.retain(|d| *d != rule);
            days.push(instead);
        }
    }
    days.extend(
        ONE_OFF
            .iter()
            .filter(|(y, _, _)| *y == year)
            .filter_map(|(y, m, d)| date(*y, *m, *d)),
    );
    days.sort();
    days.dedup();
    days
}

/// True if `d` is an England and Wales bank holiday.
pub fn is_bank_holiday(d: Date) -> bool {
    // The year last asked about and its bank holidays: a deadline counts
    // the days of a year or two one after another (an inbox page, every
    // pack's deadline), so the year's list is worked out once, not for
    // every day counted.
    // A panic elsewhere cannot leave it half-written (it is replaced
    // whole), so a poisoned lock is taken as it is.
    static LAST: Mutex<Option<(i32, Vec<Date>)>> = Mutex::new(None);
    let year = d.year();
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    if last.as_ref().is_none_or(|(y, _)| *y != year) {
        *last = Some((year, bank_holidays(year)));
    }
    last.as_ref().is_some_and(|(_, days)| days.contains(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn easter_in_several_years() {
        for (year, sunday) in [
            (2019, date!(2019 - 04 - 21)),
            (2024, date!(2024 - 03 - 31)),
            (2025, date!(2025 - 04 - 20)),
            (2026, date!(2026 - 04 - 05)),
            (2027, date!(2027 - 03 - 28)),
            (2038, date!(2038 - 04 - 25)),
        ] {
            assert_eq!(easter(year), Some(sunday), "{year}");
        }
    }

    #[test]
    fn bank_holidays_by_rule_with_substitutes_and_one_offs() {
        assert_eq!(
            bank_holidays(2026),
            vec![
                date!(2026 - 01 - 01),
                date!(2026 - 04 - 03),
                date!(2026 - 04 - 06),
                date!(2026 - 05 - 04),
                date!(2026 - 05 - 25),
                date!(2026 - 08 - 31),
                date!(2026 - 12 - 25),
                // Boxing Day is a Saturday: Monday instead.
                date!(2026 - 12 - 28),
            ]
        );
        // Christmas on a Saturday, Boxing Day on a Sunday: Monday and Tuesday.
        let b2021 = bank_holidays(2021);
        assert!(b2021.contains(&date!(2021 - 12 - 27)));
        assert!(b2021.contains(&date!(2021 - 12 - 28)));
        // New Year's Day on a Saturday (2022): Monday 3 January.
        assert!(bank_holidays(2022).contains(&date!(2022 - 01 - 03)));
        // Christmas on a Sunday (2022): Boxing Day Monday, Christmas Tuesday.
        let b2022 = bank_holidays(2022);
        assert!(b2022.contains(&date!(2022 - 12 - 26)));
        assert!(b2022.contains(&date!(2022 - 12 - 27)));
        // 2022: spring holiday moved to 2 June, the jubilee on 3 June, the
        // state funeral on 19 September.
        assert!(b2022.contains(&date!(2022 - 06 - 02)));
        assert!(!b2022.contains(&date!(2022 - 05 - 30)));
        assert!(b2022.contains(&date!(2022 - 06 - 03)));
        assert!(b2022.contains(&date!(2022 - 09 - 19)));
        // 2020: early May moved to Friday 8 May (VE Day).
        let b2020 = bank_holidays(2020);
        assert!(b2020.contains(&date!(2020 - 05 - 08)));
        assert!(!b2020.contains(&date!(2020 - 05 - 04)));
        // 2023: the coronation.
        assert!(is_bank_holiday(date!(2023 - 05 - 08)));
        assert_eq!(bank_holidays(2023).len(), 9);
        assert_eq!(bank_holidays(2027).len(), 8);
        assert!(!is_bank_holiday(date!(2026 - 12 - 26)));
    }

    #[test]
    fn the_remembered_year_answers_as_the_rules_do_whichever_year_comes_next() {
        // Days of three years, interleaved, so the remembered year changes
        // at almost every call and comes back.
        let start = date!(2021 - 01 - 01);
        for offset in 0..366 {
            for year in 0..3 {
                let d = start + Duration::days(offset + 365 * year);
                assert_eq!(
                    is_bank_holiday(d),
                    bank_holidays(d.year()).contains(&d),
                    "{d}"
                );
            }
        }
    }
}
