//! A school calendar: its terms and closures, and school-day arithmetic
//! over them. A school day is a weekday inside a term that is neither an
//! England and Wales bank holiday nor a closure (INSET, occasional days).
//! With no calendar, school days are weekdays that are not bank holidays.
//! A calendar says nothing past its last term: a due date beyond it is
//! unknown until the next terms are imported (guessing weekdays would put
//! due dates in the summer holiday, and packs overdue that are not).

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Weekday};

use super::holidays::is_bank_holiday;

/// Longest span searched for a due date (ten years of days).
const MAX_SPAN_DAYS: i64 = 3660;

/// One term: its first and last day, and days it is closed to pupils.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// First day of the term.
    #[serde(with = "ymd")]
    pub start: Date,
    /// Last day of the term.
    #[serde(with = "ymd")]
    pub end: Date,
    /// Days inside the term that are not pupil days.
    #[serde(default, with = "ymd_list")]
    pub closures: Vec<Date>,
}

/// A named calendar of terms, in date order, not overlapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calendar {
    /// Its name, e.g. "Stoke-on-Trent 2026-27".
    pub name: String,
    /// The terms.
    #[serde(rename = "term")]
    pub terms: Vec<Term>,
}

/// Why a calendar file was refused, naming the term and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Not TOML of the expected shape.
    #[error("{0}")]
    Parse(String),
    /// A term ends before it starts.
    #[error("term {term}: `end` {end} is before `start` {start}")]
    Backwards {
        /// Which term, from 1.
        term: usize,
        /// Its start.
        start: Date,
        /// Its end.
        end: Date,
    },
    /// Terms overlap or are out of order.
    #[error("term {term}: starts {start}, before term {previous} ends ({previous_end})")]
    Overlap {
        /// Which term, from 1.
        term: usize,
        /// Its start.
        start: Date,
        /// The term before.
        previous: usize,
        /// When that one ends.
        previous_end: Date,
    },
    /// A closure outside its term.
    #[error("term {term}: closure {day} is outside the term ({start} to {end})")]
    ClosureOutside {
        /// Which term, from 1.
        term: usize,
        /// The closure.
        day: Date,
        /// Term start.
        start: Date,
        /// Term end.
        end: Date,
    },
    /// No term at all.
    #[error("a calendar needs at least one [[term]]")]
    Empty,
}

fn is_weekday(d: Date) -> bool {
    !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

impl Calendar {
    /// Parses and checks a calendar file (TOML).
    pub fn from_toml(text: &str) -> Result<Self, CalendarError> {
        let calendar: Self =
            toml::from_str(text).map_err(|e| CalendarError::Parse(e.to_string()))?;
        calendar.check()?;
        Ok(calendar)
    }

    /// Checks terms are in order, do not overlap, and hold their closures.
    pub fn check(&self) -> Result<(), CalendarError> {
        if self.terms.is_empty() {
            return Err(CalendarError::Empty);
        }
        for (i, t) in self.terms.iter().enumerate() {
            let term = i + 1;
            if t.end < t.start {
                return Err(CalendarError::Backwards {
                    term,
                    start: t.start,
                    end: t.end,
                });
            }
            if i > 0 && self.terms[i - 1].end >= t.start {
                return Err(CalendarError::Overlap {
                    term,
                    start: t.start,
                    previous: i,
                    previous_end: self.terms[i - 1].end,
                });
            }
            if let Some(day) = t.closures.iter().find(|d| **d < t.start || **d > t.end) {
                return Err(CalendarError::ClosureOutside {
                    term,
                    day: *day,
                    start: t.start,
                    end: t.end,
                });
            }
        }
        Ok(())
    }

    /// The last day the calendar knows about.
    pub fn last_day(&self) -> Option<Date> {
        self.terms.last().map(|t| t.end)
    }

    /// True if pupils are in school on `d`.
    pub fn is_school_day(&self, d: Date) -> bool {
        if !is_weekday(d) || is_bank_holiday(d) {
            return false;
        }
        self.terms
            .iter()
            .any(|t| t.start <= d && d <= t.end && !t.closures.contains(&d))
    }
}

/// School days on `calendar`, or weekdays less bank holidays without one.
pub fn is_school_day(calendar: Option<&Calendar>, d: Date) -> bool {
    match calendar {
        Some(c) => c.is_school_day(d),
        None => is_weekday(d) && !is_bank_holiday(d),
    }
}

/// The `n`th school day after `left` (day 1 is the first school day after
/// it); `None` if the calendar ends first (or, without one, none falls
/// within ten years).
pub fn nth_school_day_after(calendar: Option<&Calendar>, left: Date, n: u32) -> Option<Date> {
    let mut d = left;
    let mut counted = 0;
    let last = calendar.and_then(Calendar::last_day);
    for _ in 0..MAX_SPAN_DAYS {
        d = d.checked_add(Duration::days(1))?;
        if last.is_some_and(|last| d > last) {
            return None;
        }
        if is_school_day(calendar, d) {
            counted += 1;
            if counted >= n {
                return Some(d);
            }
        }
    }
    None
}

/// School days after `from` up to and including `to` (0 if `to` is not
/// after `from`).
pub fn school_days_between(calendar: Option<&Calendar>, from: Date, to: Date) -> u32 {
    let mut d = from;
    let mut counted = 0;
    for _ in 0..MAX_SPAN_DAYS {
        if d >= to {
            break;
        }
        let Some(next) = d.checked_add(Duration::days(1)) else {
            break;
        };
        d = next;
        if is_school_day(calendar, d) {
            counted += 1;
        }
    }
    counted
}

/// `YYYY-MM-DD` dates in files.
mod ymd {
    use baton::dates::{format_ymd as format, parse_ymd as parse};
    use serde::{Deserialize as _, Deserializer, Serializer};
    use time::Date;

    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (expected YYYY-MM-DD)")))
    }
}

mod ymd_list {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use time::Date;

    pub fn serialize<S: Serializer>(days: &[Date], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(days.iter().map(|d| baton::dates::format_ymd(*d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Date>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                baton::dates::parse_ymd(t).map_err(|e| {
                    serde::de::Error::custom(format!("closure {t:?}: {e} (expected YYYY-MM-DD)"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const STOKE: &str = r#"
name = "Stoke-on-Trent 2026-27"
[[term]]
start = "2026-09-03"
end = "2026-10-23"
closures = ["2026-09-04"]
[[term]]
start = "2026-11-02"
end = "2026-12-18"
closures = ["2026-11-20"]
[[term]]
start = "2027-01-05"
end = "2027-02-12"
[[term]]
start = "2027-02-22"
end = "2027-03-26"
[[term]]
start = "2027-04-12"
end = "2027-05-28"
closures = ["2027-05-03"]
[[term]]
start = "2027-06-07"
end = "2027-07-21"
"#;

    fn stoke() -> Calendar {
        Calendar::from_toml(STOKE).unwrap()
    }

    #[test]
    fn due_dates_on_a_trust_calendar() {
        let c = stoke();
        let c = Some(&c);
        // (leaving date, n, due): table of the cases that matter.
        for (left, n, due) in [
            // A Friday mid-term: the clock starts on Monday.
            (date!(2026 - 11 - 06), 1, date!(2026 - 11 - 09)),
            (date!(2026 - 11 - 06), 5, date!(2026 - 11 - 13)),
            // 15 school days across a closure (20 Nov).
            (date!(2026 - 11 - 06), 15, date!(2026 - 11 - 30)),
            // Across half term (26 Oct to 30 Oct, term resumes 2 Nov).
            (date!(2026 - 10 - 21), 5, date!(2026 - 11 - 04)),
            // On a term's last day: the CP file is due on the 5th day of
            // the next term (Christmas, Boxing Day substitute and New Year
            // out of the way).
            (date!(2026 - 12 - 18), 5, date!(2027 - 01 - 11)),
            // Leaving in a holiday (half term in February).
            (date!(2027 - 02 - 15), 1, date!(2027 - 02 - 22)),
            // Across Easter: the term's last day, 26 Mar 2027, is Good
            // Friday; the next school day is 12 Apr.
            (date!(2027 - 03 - 25), 1, date!(2027 - 04 - 12)),
            (date!(2027 - 03 - 25), 2, date!(2027 - 04 - 13)),
            // Across the early May bank holiday and a closure on it.
            (date!(2027 - 04 - 30), 1, date!(2027 - 05 - 04)),
            // An INSET day (Friday 4 Sep) in the first week of term.
            (date!(2026 - 09 - 02), 1, date!(2026 - 09 - 03)),
            (date!(2026 - 09 - 02), 2, date!(2026 - 09 - 07)),
        ] {
            assert_eq!(nth_school_day_after(c, left, n), Some(due), "{left} + {n}");
        }
        // A July leaver's CP file is due in September, which this calendar
        // does not reach: unknown, not guessed.
        assert_eq!(nth_school_day_after(c, date!(2027 - 07 - 21), 5), None);
        // Leaving in the summer before the calendar starts: its first term
        // counts.
        assert_eq!(
            nth_school_day_after(c, date!(2026 - 07 - 22), 1),
            Some(date!(2026 - 09 - 03))
        );
        assert_eq!(
            school_days_between(c, date!(2026 - 11 - 06), date!(2026 - 11 - 30)),
            15
        );
        assert_eq!(
            school_days_between(c, date!(2026 - 11 - 30), date!(2026 - 11 - 06)),
            0
        );
    }

    #[test]
    fn without_a_calendar_weekdays_less_bank_holidays_count() {
        assert_eq!(
            nth_school_day_after(None, date!(2026 - 12 - 23), 3),
            Some(date!(2026 - 12 - 30))
        );
        assert_eq!(
            nth_school_day_after(None, date!(2026 - 04 - 02), 1),
            Some(date!(2026 - 04 - 07))
        );
    }

    #[test]
    fn bad_calendars_name_the_term_and_field() {
        let backwards = "name = \"x\"\n[[term]]\nstart = \"2026-09-03\"\nend = \"2026-09-01\"\n";
        assert!(matches!(
            Calendar::from_toml(backwards),
            Err(CalendarError::Backwards { term: 1, .. })
        ));
        let overlap = "name = \"x\"\n[[term]]\nstart = \"2026-09-03\"\nend = \"2026-10-01\"\n[[term]]\nstart = \"2026-09-30\"\nend = \"2026-11-01\"\n";
        let e = Calendar::from_toml(overlap).unwrap_err();
        assert!(e.to_string().starts_with("term 2:"), "{e}");
        let outside = "name = \"x\"\n[[term]]\nstart = \"2026-09-03\"\nend = \"2026-10-01\"\nclosures = [\"2026-10-02\"]\n";
        assert!(matches!(
            Calendar::from_toml(outside),
            Err(CalendarError::ClosureOutside { term: 1, .. })
        ));
        let bad_date = "name = \"x\"\n[[term]]\nstart = \"3 Sept\"\nend = \"2026-10-01\"\n";
        let e = Calendar::from_toml(bad_date).unwrap_err().to_string();
        assert!(e.contains("3 Sept") && e.contains("YYYY-MM-DD"), "{e}");
        assert_eq!(
            Calendar::from_toml("name = \"x\"\nterm = []\n"),
            Err(CalendarError::Empty)
        );
        // Round trip through JSON (as stored).
        let c = stoke();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Calendar>(&json).unwrap(), c);
    }
}
