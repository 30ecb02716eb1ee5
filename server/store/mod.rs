//! Storage, by concern: the [`Directory`] (schools, keys, tokens, enrolment
//! codes), [`Packs`] (staging, commit, listings, chunks, download marks,
//! receipts), the [`Lifecycle`] (recall, supersede, retention purge), the
//! [`AuditLog`], [`Events`] (arrivals for `Watch`), [`Calendars`] and the
//! dashboard's sign-in links ([`DashboardLinks`]) and federation [`Peers`]. [`Store`] is all of
//! them, which is what the services are written against.
//!
//! Two backends: SQLite (one node, the default) and PostgreSQL (several
//! nodes on one database). Every statement the two dialects agree on is
//! written once, in [`shared`], and expanded for each backend's connection
//! type; each backend keeps only what really differs: how a write
//! transaction begins and how the audit chain is appended ([`sqlite::chain`],
//! [`postgres::chain`]), cleaning staged chunks on start, its group-commit
//! writer, and how arrivals reach other nodes.

#[macro_use]
mod appender;
#[macro_use]
mod shared;
#[macro_use]
pub mod lifecycle;
#[macro_use]
pub mod dashboard;
#[macro_use]
pub mod peers;
#[macro_use]
pub mod relays;

pub mod audit_log;
pub mod calendars;
pub mod directory;
pub mod error;
pub mod events;
pub mod files;
mod group;
pub mod packs;
pub mod postgres;
mod rows;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

pub use audit_log::{AuditLog, Entries};
pub use calendars::{Calendars, StoredCalendar};
pub use dashboard::DashboardLinks;
pub use directory::{DIRECTORY_VERSION_SQL, Directory, NewSchool, School, TokenHolder};
pub use error::{Result, StoreError};
pub use events::{ARRIVALS_BUFFER, Arrival, Events};
pub use files::{CHUNK_BYTES, PackFiles};
pub use lifecycle::{Cutoffs, Lifecycle, Withdrawal, Withdrawn};
pub use packs::{
    Acknowledged, Committed, ForDownload, PackStatus, Packs, Page, PeerLink, Route, StoredPack,
};
pub use peers::{Peer, PeerSchool, PeerSync, Peers};
pub use relays::Relays;

/// Persistent state of the daemon: every concern at once. Implementations
/// must make each call atomic and durable before returning, and safe to
/// call from several processes sharing the database (admin commands run
/// beside `serve`).
pub trait Store:
    Directory
    + Packs
    + Lifecycle
    + AuditLog
    + Events
    + Calendars
    + Backup
    + DashboardLinks
    + Peers
    + Relays
    + 'static
{
}

impl<
    T: Directory
        + Packs
        + Lifecycle
        + AuditLog
        + Events
        + Calendars
        + Backup
        + DashboardLinks
        + Peers
        + Relays
        + 'static,
> Store for T
{
}

/// A consistent copy of the database while the daemon serves.
pub trait Backup: Send + Sync {
    /// Writes a consistent copy of the whole database to the new file
    /// `path` (SQLite's `VACUUM INTO`: one read transaction, so writes
    /// committed before it began are in, later ones are not), and the
    /// ciphertext files beside it (`baton.db-ciphertext/`, none removed meanwhile).
    /// `false` where the backend has its own tools instead (PostgreSQL:
    /// `pg_dump`).
    fn backup_into(
        &self,
        path: &std::path::Path,
    ) -> impl std::future::Future<Output = Result<bool>> + Send;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}
