//! Statutory clocks: school days (the trust's calendar and England and
//! Wales bank holidays) and the due dates they give a pack: the 15th school
//! day after the pupil left for a transfer pack (Education (Pupil
//! Information) (England) Regulations 2005, reg 9(3)), the 5th for a
//! child-protection file (Keeping Children Safe in Education), counted on
//! the sending school's calendar.

pub mod calendar;
pub mod holidays;

pub use calendar::{Calendar, nth_school_day_after};

/// School days after the leaving date within which a transfer pack is due.
pub const TRANSFER_SCHOOL_DAYS: u32 = 15;
/// School days after the leaving date within which a child-protection file is due.
pub const SAFEGUARDING_SCHOOL_DAYS: u32 = 5;
