//! The trust's school calendars: its default and schools' own term dates,
//! stored as checked JSON (see `clocks::Calendar`).

use std::future::Future;

use baton::Laestab;

use super::error::Result;
use crate::audit;

/// A stored calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCalendar {
    /// The school it is for; `None` for the trust's default.
    pub school: Option<Laestab>,
    /// Its name.
    pub name: String,
    /// The calendar, JSON.
    pub body: String,
    /// When it was imported.
    pub imported_at_ms: i64,
}

/// Calendars, by scope.
pub trait Calendars: Send + Sync {
    /// Stores (or replaces) the calendar of `cal.school`, auditing it.
    fn set_calendar(
        &self,
        cal: &StoredCalendar,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every stored calendar, the trust's default first.
    fn calendars(&self) -> impl Future<Output = Result<Vec<StoredCalendar>>> + Send;
}
