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

/// A new upload's id, the daemon's own (it names the upload's staged
/// chunks and, on SQLite, its ciphertext file): the time in milliseconds
/// as 12 hex digits, then 80 random bits as 20. Time first, so packs
/// stored together have neighbouring ids: their entries in the chunk and
/// pack indexes keyed on the id are appended to the same few pages,
/// where a wholly random id put each pack's entries on a page of its own
/// (a page more to write to the log for each such index, for every pack).
pub fn new_upload_id() -> String {
    let ms = u64::try_from(now_ms()).unwrap_or(0) & 0xffff_ffff_ffff;
    format!("{ms:012x}{}", hex::encode(rand::random::<[u8; 10]>()))
}

#[cfg(test)]
mod tests {
    use super::new_upload_id;

    #[test]
    fn upload_ids_sort_in_the_order_they_were_made_and_differ_within_a_millisecond() {
        let first = new_upload_id();
        let same_ms = new_upload_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_upload_id();
        for id in [&first, &same_ms, &later] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(first, same_ms);
        assert!(
            later > first && later > same_ms,
            "{first} {same_ms} {later}"
        );
        // The time part is now's.
        let ms = u64::from_str_radix(&later[..12], 16).unwrap();
        let now = u64::try_from(super::now_ms()).unwrap();
        assert!(now.abs_diff(ms) < 60_000, "{ms} vs {now}");
    }
}
