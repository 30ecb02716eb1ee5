//! Packs: staging an upload's chunks, committing it (visible all at once),
//! the inbox and sent listings, ciphertext chunks, download marks and
//! receipts.

use std::future::Future;

use baton::Laestab;
use baton::pack::{PackId, SignedHeader};

use super::error::Result;
use crate::audit;

/// Where a pack is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackStatus {
    /// Stored, not yet downloaded.
    Pending,
    /// Downloaded at least once.
    Downloaded,
    /// Receipt recorded.
    Acknowledged,
    /// Withdrawn (recalled or superseded) before the destination downloaded
    /// it: the ciphertext is deleted and the destination no longer sees it.
    Recalled,
    /// Retention deleted the ciphertext; the row stays as evidence.
    Purged,
    /// Held in escrow, then forwarded to the school the pupil joined (see
    /// `StoredPack::readdressed_as`); the held ciphertext is deleted.
    Readdressed,
}

impl PackStatus {
    /// Every state, in a pack's order of life.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Downloaded,
        Self::Acknowledged,
        Self::Recalled,
        Self::Purged,
        Self::Readdressed,
    ];

    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Downloaded => "downloaded",
            Self::Acknowledged => "acknowledged",
            Self::Recalled => "recalled",
            Self::Purged => "purged",
            Self::Readdressed => "readdressed",
        }
    }

    /// A stored status.
    pub fn from_text(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "downloaded" => Self::Downloaded,
            "acknowledged" => Self::Acknowledged,
            "recalled" => Self::Recalled,
            "purged" => Self::Purged,
            "readdressed" => Self::Readdressed,
            _ => return None,
        })
    }
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
    /// The pack this one corrects, as its signed header says.
    pub supersedes: Option<PackId>,
    /// The pack that corrects this one.
    pub superseded_by: Option<PackId>,
    /// The sender's signed recall as protobuf bytes (`baton.v1.Recall`).
    pub recall: Option<Vec<u8>>,
    /// When the sender withdrew it (recall or supersede).
    pub recalled_at_ms: Option<i64>,
    /// When its ciphertext was deleted (withdrawal or retention).
    pub deleted_at_ms: Option<i64>,
    /// When retention purged it.
    pub purged_at_ms: Option<i64>,
    /// Why retention purged it: `acknowledged` or `not collected`.
    pub purge_reason: Option<String>,
    /// The pack this one forwards (the escrow re-addressed it), as its
    /// signed header says.
    pub forwards: Option<PackId>,
    /// The pack that forwards this one to the school the pupil joined.
    pub readdressed_as: Option<PackId>,
    /// The peer daemon it is relayed to (addressed to that peer's school).
    pub relay_to: Option<String>,
    /// When that peer confirmed it holds the pack (its relay receipt).
    pub relayed_at_ms: Option<i64>,
    /// The peer daemon it was relayed from (sent by that peer's school).
    pub relayed_from: Option<String>,
}

/// The schools a pack is stored under, when its header names a former
/// number of its sender or destination (see `Directory::renumber`): the
/// signed header keeps the numbers it names, the row records the routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The sending school, by its current number.
    pub from: Laestab,
    /// The destination school, by its current number.
    pub to: Laestab,
    /// The peer daemon the pack crosses to or came from, if any.
    pub peer: Option<PeerLink>,
}

/// A pack's link with another trust's daemon (docs/federation.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerLink {
    /// Addressed to a school of this peer: relay it there.
    RelayTo(String),
    /// Relayed here by this peer: its school's receipt goes back there.
    RelayedFrom(String),
}

impl Route {
    /// The peer to relay to, for the `relay_to` column.
    pub fn relay_to(&self) -> Option<&str> {
        match &self.peer {
            Some(PeerLink::RelayTo(p)) => Some(p),
            _ => None,
        }
    }

    /// The peer relayed from, for the `relayed_from` column.
    pub fn relayed_from(&self) -> Option<&str> {
        match &self.peer {
            Some(PeerLink::RelayedFrom(p)) => Some(p),
            _ => None,
        }
    }
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
    /// against it (see [`Packs::commit_upload`]). The tail chunks
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

/// The bytes a school (`$1`) has stored and not yet acknowledged: what its
/// quota counts, read on every upload, so an index-only scan of the
/// partial index `packs_outstanding` (outstanding packs only).
pub const OUTSTANDING_SQL: &str = "SELECT CAST(COALESCE(SUM(ciphertext_length), 0) AS BIGINT) \
     FROM packs WHERE from_laestab = $1 AND status IN ('pending', 'downloaded') \
     AND deleted_at_ms IS NULL";

/// A pack read for a download ([`Packs::pack_for_download`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForDownload {
    /// The pack.
    pub pack: StoredPack,
    /// Its one chunk, when it is one chunk held as a row.
    pub chunk: Option<Vec<u8>>,
    /// The directory version as of the same read.
    pub directory_version: i64,
}

/// Packs in one state, and the ciphertext they still hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTotal {
    /// The state.
    pub status: PackStatus,
    /// How many packs are in it.
    pub packs: u64,
    /// Bytes of ciphertext stored for them (0 once deleted).
    pub bytes: u64,
}

/// A page of packs.
pub struct Page {
    /// At most `limit` packs.
    pub packs: Vec<StoredPack>,
    /// Whether more follow.
    pub more: bool,
}

/// Sealed packs and their life on the server. Every call that changes a
/// pack appends its audit event in the same transaction. Download marks
/// and receipts, like a listing's event, go through the store's write queue
/// (`store::appender`): one synced transaction for what arrives together.
pub trait Packs: Send + Sync {
    /// Removes staged chunks of uploads that never finished (call on start).
    fn clean_staging(&self) -> impl Future<Output = Result<u64>> + Send;

    /// A visible pack by id.
    fn pack(&self, id: PackId) -> impl Future<Output = Result<Option<StoredPack>>> + Send;

    /// The visible packs among `ids` (at most a few hundred), in one read;
    /// those not found are left out.
    fn packs(
        &self,
        ids: &[PackId],
    ) -> impl Future<Output = Result<Vec<(PackId, StoredPack)>>> + Send;

    /// [`Packs::pack`] for a download, in one query: with a pack of one
    /// chunk held as a row (the small packs of the busy path), that chunk
    /// too; and the directory version as of the same read.
    fn pack_for_download(
        &self,
        id: PackId,
    ) -> impl Future<Output = Result<Option<ForDownload>>> + Send;

    /// [`Packs::pack_for_download`] for each of `ids` (at most a few dozen)
    /// in one read; those not found are left out.
    fn packs_for_download(
        &self,
        ids: &[PackId],
    ) -> impl Future<Output = Result<Vec<(PackId, ForDownload)>>> + Send;

    /// Stores one chunk of an upload in flight (invisible until committed).
    /// Chunks come in order, and every one but an upload's last is
    /// [`CHUNK_BYTES`](super::CHUNK_BYTES) long (SQLite keeps such uploads
    /// in a file and finds chunk `idx` at `idx × CHUNK_BYTES`).
    fn stage_chunk(
        &self,
        upload_id: &str,
        idx: i64,
        data: bytes::Bytes,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Drops every chunk of an upload that will not be committed.
    fn discard_upload(&self, upload_id: &str) -> impl Future<Output = Result<()>> + Send;

    /// Makes an upload visible: stores the trailing chunks, flips the staged
    /// ones and inserts the pack row, in one transaction. On `Conflict` or
    /// `AlreadyStored` the staged chunks are removed instead. With
    /// `directory_version` (the version the upload was checked against),
    /// read in the committing transaction: if the directory has moved on,
    /// nothing is stored and the answer is [`Committed::DirectoryMoved`].
    /// `route` says which schools the pack is stored under when the header
    /// names a former number (an alias) of either; `None`: the header's.
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
        route: Option<Route>,
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

    /// Every pack not acknowledged yet, in storage order (metadata only).
    fn unacknowledged(&self) -> impl Future<Output = Result<Vec<StoredPack>>> + Send;

    /// Every pack stored from `since_ms` (inclusive) to `until_ms`
    /// (exclusive), in storage order: metadata for reports, never chunks.
    fn stored_between(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> impl Future<Output = Result<Vec<StoredPack>>> + Send;

    /// Bytes of ciphertext `from` has sent that are stored and not yet
    /// acknowledged (what its storage quota counts).
    fn outstanding_bytes(&self, from: &Laestab) -> impl Future<Output = Result<u64>> + Send;

    /// How many packs are in each state and the ciphertext bytes still
    /// held in each (metadata only: for metrics and the dashboard).
    fn totals(&self) -> impl Future<Output = Result<Vec<StatusTotal>>> + Send;

    /// One chunk of a visible pack's ciphertext.
    fn chunk(&self, upload_id: &str, idx: i64) -> impl Future<Output = Result<Vec<u8>>> + Send;

    /// Records a download (the first one moves the pack to `downloaded`).
    fn mark_downloaded(
        &self,
        id: PackId,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records the download its destination `to` confirmed, in one write,
    /// if pack `id` is pending for `to` with ciphertext `sha256` and (unless
    /// the key may see `safeguarding` files) a transfer pack: `true` when it
    /// moved to `downloaded` (and `event` was appended), `false` when
    /// nothing was written (the caller reads the pack to answer).
    /// With `directory_version`, only if the directory is still at it (the
    /// caller authenticated against it without reading it).
    #[allow(clippy::too_many_arguments)]
    fn confirm_download(
        &self,
        id: PackId,
        to: &Laestab,
        sha256: &[u8],
        safeguarding: bool,
        directory_version: Option<i64>,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Records a receipt.
    fn acknowledge(
        &self,
        id: PackId,
        receipt: &[u8],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<Acknowledged>> + Send;
}
