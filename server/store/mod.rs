//! Storage: the one [`Store`] trait the services are written against, and
//! its implementations: SQLite (one node, the default) and PostgreSQL
//! (several nodes on one database).
//!
//! The store holds schools, keys, hashed tokens and enrolment codes, sealed
//! packs (ciphertext in chunks plus the signed header) and the audit log.
//! Every mutating call takes the [`audit::Event`] that describes it and
//! appends it in the same transaction.

mod group;
pub mod postgres;
mod rows;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

use std::future::Future;

use baton::Laestab;
use baton::keys::{KeyId, SchoolKey};
use baton::pack::{PackId, SignedHeader};

use tokio::sync::broadcast;

use crate::audit;

/// How many arrivals a slow `Watch` subscriber may fall behind before it
/// misses some (it is told, and should list its inbox).
pub const ARRIVALS_BUFFER: usize = 1024;

/// A pack just made visible, for `Watch` subscribers on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// Destination school.
    pub to: Laestab,
    /// The signed header as protobuf bytes, as stored.
    pub header: Vec<u8>,
    /// When it was stored.
    pub uploaded_at_ms: i64,
}

/// A store failure the services turn into a status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing named does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique thing already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The one-time enrolment code is unknown, used, expired or for another school.
    #[error("the enrolment code is not valid for this school (unknown, used or expired)")]
    BadCode,
    /// A stored row does not decode: the database was edited or is damaged.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Shorthand for store results.
pub type Result<T> = std::result::Result<T, StoreError>;

/// A school as the operator enrolled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchool {
    /// The school's LAESTAB.
    pub laestab: Laestab,
    /// Its name.
    pub name: String,
    /// Phase of education.
    pub phase: String,
    /// URN, empty when unknown.
    pub urn: String,
}

/// An enrolled school with its keys (active and revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct School {
    /// Name, phase, URN and LAESTAB.
    pub info: NewSchool,
    /// When it was enrolled.
    pub created_at_ms: i64,
    /// Every key, active and revoked, in key id order.
    pub keys: Vec<SchoolKey>,
}

/// Where a pack is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackStatus {
    /// Stored, not yet downloaded.
    Pending,
    /// Downloaded at least once.
    Downloaded,
    /// Receipt recorded.
    Acknowledged,
}

/// A visible pack's metadata (not its ciphertext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPack {
    /// Storage order; page tokens are built from it.
    pub seq: i64,
    /// The signed header as protobuf bytes, exactly as first accepted.
    pub header: Vec<u8>,
    /// Sender.
    pub from: Laestab,
    /// Destination.
    pub to: Laestab,
    /// SHA-256 of the ciphertext.
    pub ciphertext_sha256: [u8; 32],
    /// Where the ciphertext chunks are.
    pub upload_id: String,
    /// Number of chunks.
    pub chunks: i64,
    /// State.
    pub status: PackStatus,
    /// When stored.
    pub uploaded_at_ms: i64,
    /// When first downloaded.
    pub downloaded_at_ms: Option<i64>,
    /// When acknowledged.
    pub acknowledged_at_ms: Option<i64>,
    /// The receipt as protobuf bytes, once acknowledged.
    pub receipt: Option<Vec<u8>>,
}

/// What happened to a finished upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Newly stored at this time.
    Stored(i64),
    /// The identical pack was already stored at this time (a retry).
    AlreadyStored(i64),
    /// Another pack with this id exists.
    Conflict,
    /// Not stored: the directory changed since the upload was checked
    /// against it (see [`Store::commit_upload`]). The tail chunks
    /// are now staged; check the upload again and commit it with no tail.
    DirectoryMoved,
}

/// What happened to an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledged {
    /// Recorded now, or the identical receipt earlier, at this time.
    At(i64),
    /// A different receipt is already recorded.
    Conflict,
}

/// A page of packs.
pub struct Page {
    /// At most `limit` packs.
    pub packs: Vec<StoredPack>,
    /// Whether more follow.
    pub more: bool,
}

/// Persistent state of the daemon. Implementations must make each call
/// atomic and durable before returning, and safe to call from several
/// processes sharing the database (admin commands run beside `serve`).
pub trait Store: Send + Sync + 'static {
    /// Removes staged chunks of uploads that never finished (call on start).
    fn clean_staging(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Enrols a school with a one-time code (hash only) valid until `expires_at_ms`.
    fn add_school(
        &self,
        school: &NewSchool,
        code_hash: [u8; 32],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Issues another one-time code for an enrolled school, so a further key
    /// holder (another device, the DSL) can enrol. `NotFound` if not enrolled.
    fn issue_code(
        &self,
        laestab: &Laestab,
        code_hash: [u8; 32],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every school with all its keys, by LAESTAB.
    fn list_schools(&self) -> impl Future<Output = Result<Vec<School>>> + Send;

    /// One school with all its keys.
    fn school(&self, laestab: &Laestab) -> impl Future<Output = Result<Option<School>>> + Send;

    /// Redeems a code: registers the first key, marks the code used and stores
    /// the token hash, all at once.
    fn redeem(
        &self,
        laestab: &Laestab,
        code_hash: [u8; 32],
        key: &SchoolKey,
        token_hash: [u8; 32],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<School>> + Send;

    /// Registers another key for a school.
    fn add_key(
        &self,
        laestab: &Laestab,
        key: &SchoolKey,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Revokes a key of a school (idempotent); returns it.
    fn revoke_key(
        &self,
        laestab: &Laestab,
        key_id: KeyId,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<SchoolKey>> + Send;

    /// A number that changes whenever any school, key or token changes
    /// (by any process or node), so a cache of them can tell it is current.
    fn directory_version(&self) -> impl Future<Output = Result<i64>> + Send;

    /// The school an active token belongs to.
    fn token_school(
        &self,
        token_hash: [u8; 32],
    ) -> impl Future<Output = Result<Option<Laestab>>> + Send;

    /// Revokes every token of a school; returns how many.
    fn revoke_tokens(
        &self,
        laestab: &Laestab,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// A visible pack by id.
    fn pack(&self, id: PackId) -> impl Future<Output = Result<Option<StoredPack>>> + Send;

    /// Stores one chunk of an upload in flight (invisible until committed).
    fn stage_chunk(
        &self,
        upload_id: &str,
        idx: i64,
        data: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Drops every chunk of an upload that will not be committed.
    fn discard_upload(&self, upload_id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Makes an upload visible: stores the trailing chunks, flips the staged
    /// ones and inserts the pack row, in one transaction. On `Conflict` or
    /// `AlreadyStored` the staged chunks are removed instead. With
    /// `directory_version` (the version the upload was checked against),
    /// read in the committing transaction: if the directory has moved on,
    /// nothing is stored and the answer is [`Committed::DirectoryMoved`].
    #[allow(clippy::too_many_arguments)]
    fn commit_upload(
        &self,
        upload_id: &str,
        header: &SignedHeader,
        header_bytes: &[u8],
        tail: Vec<(i64, Vec<u8>)>,
        now_ms: i64,
        event: audit::Event,
        directory_version: Option<i64>,
    ) -> impl Future<Output = Result<Committed>> + Send;

    /// Packs addressed to `to` and not acknowledged, oldest first, after `after_seq`.
    fn inbox(
        &self,
        to: &Laestab,
        after_seq: i64,
        limit: u32,
        event: audit::Event,
    ) -> impl Future<Output = Result<Page>> + Send;

    /// Packs sent by `from`, newest first, before `before_seq`.
    fn sent(
        &self,
        from: &Laestab,
        before_seq: i64,
        limit: u32,
        event: audit::Event,
    ) -> impl Future<Output = Result<Page>> + Send;

    /// One chunk of a visible pack's ciphertext.
    fn chunk(&self, upload_id: &str, idx: i64) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// Records a download (the first one moves the pack to `downloaded`).
    fn mark_downloaded(
        &self,
        id: PackId,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records a receipt.
    fn acknowledge(
        &self,
        id: PackId,
        receipt: &[u8],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<Acknowledged>> + Send;

    /// The whole audit log in order.
    fn audit_log(&self) -> impl Future<Output = Result<Vec<audit::Entry>>> + Send;

    /// Starts delivering arrivals to [`Store::subscribe`], including packs
    /// stored by other nodes sharing the database. `serve` calls it once
    /// before taking calls; admin commands never do.
    fn listen(&self) -> impl Future<Output = Result<()>> + Send;

    /// Packs made visible from now on (after [`Store::listen`]).
    fn subscribe(&self) -> broadcast::Receiver<Arrival>;
}

/// The directory version (see [`Store::directory_version`]); the same SQL
/// on both backends.
pub const DIRECTORY_VERSION_SQL: &str = "SELECT version FROM directory_version WHERE id = 1";

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}
