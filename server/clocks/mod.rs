//! Statutory clocks: school days (the trust's calendar and England and
//! Wales bank holidays) and the due dates they give a pack: the 15th school
//! day after the pupil left for a transfer pack (Education (Pupil
//! Information) (England) Regulations 2005, reg 9(3)), the 5th for a
//! child-protection file (Keeping Children Safe in Education), counted on
//! the sending school's calendar.

pub mod calendar;
pub mod holidays;
pub mod overdue;

pub use calendar::{Calendar, nth_school_day_after};

use std::collections::HashMap;

use anyhow::Context as _;
use baton::Laestab;
use baton::pack::Kind;
use time::Date;

use crate::store::{Calendars, StoredCalendar};

/// School days after the leaving date within which a transfer pack is due.
pub const TRANSFER_SCHOOL_DAYS: u32 = 15;
/// School days after the leaving date within which a child-protection file is due.
pub const SAFEGUARDING_SCHOOL_DAYS: u32 = 5;

/// School days after the leaving date within which a pack of `kind` is due.
pub fn school_days_for(kind: Kind) -> u32 {
    match kind {
        Kind::Transfer => TRANSFER_SCHOOL_DAYS,
        Kind::Safeguarding => SAFEGUARDING_SCHOOL_DAYS,
    }
}

/// The stored calendars, parsed, each with its row.
pub async fn stored<S: Calendars>(store: &S) -> anyhow::Result<Vec<(StoredCalendar, Calendar)>> {
    store
        .calendars()
        .await
        .context("reading calendars")?
        .into_iter()
        .map(|s| {
            let cal: Calendar = serde_json::from_str(&s.body)
                .with_context(|| format!("stored calendar {:?} is damaged", s.name))?;
            Ok((s, cal))
        })
        .collect()
}

/// Every school's calendar, for due dates.
#[derive(Debug, Default)]
pub struct Clocks {
    default: Option<Calendar>,
    schools: HashMap<Laestab, Calendar>,
}

impl Clocks {
    /// The calendars as stored now.
    pub async fn load<S: Calendars>(store: &S) -> anyhow::Result<Self> {
        let mut clocks = Self::default();
        for (row, cal) in stored(store).await? {
            match row.school {
                Some(school) => {
                    clocks.schools.insert(school, cal);
                }
                None => clocks.default = Some(cal),
            }
        }
        Ok(clocks)
    }

    /// True if the trust has imported a default calendar.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The calendar `school` counts on: its own, or the trust's.
    pub fn calendar(&self, school: &Laestab) -> Option<&Calendar> {
        self.schools.get(school).or(self.default.as_ref())
    }

    /// When a pack of `kind` from `from` for a pupil who left on `left` is due.
    pub fn due(&self, from: &Laestab, kind: Kind, left: Date) -> Option<Date> {
        nth_school_day_after(self.calendar(from), left, school_days_for(kind))
    }
}

impl Clocks {
    /// The due date of a stored header; `None` when unknown (no leaving
    /// date before format 3, or past the calendar's last term).
    pub fn due_of(&self, header: &baton::api::v1::PackHeader) -> Option<Date> {
        let from = header.from.parse::<Laestab>().ok()?;
        let left = baton::dates::parse_ymd(&header.left_on).ok()?;
        self.due(&from, crate::services::wire::kind_of(header), left)
    }
}

/// The clocks for one answer; a storage failure is `Unavailable` (logged).
pub async fn for_answer<S: Calendars>(store: &S) -> Result<Clocks, tonic::Status> {
    Clocks::load(store).await.map_err(|e| {
        tracing::error!(error = %e, "reading calendars");
        tonic::Status::unavailable("storage failure")
    })
}
