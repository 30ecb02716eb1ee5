//! Reading the audit log back. Entries are appended by the calls that
//! change something (in their own transaction) and by the audit queue
//! (`store::appender`) for listings; this is how they come out again.

use std::pin::Pin;

use tokio_stream::Stream;

use super::error::Result;
use crate::audit;

/// The audit log as a stream of entries in chain order, read as it is
/// consumed (the whole log is never held in memory).
pub type Entries<'a> = Pin<Box<dyn Stream<Item = Result<audit::Entry>> + Send + 'a>>;

/// The audit log.
pub trait AuditLog: Send + Sync {
    /// Every entry in order, streamed.
    fn audit_log(&self) -> Entries<'_>;

    /// The newest `limit` entries, newest first (for the dashboard).
    fn recent_audit(
        &self,
        limit: u32,
    ) -> impl std::future::Future<Output = Result<Vec<audit::Entry>>> + Send;

    /// Appends an event that comes with no write of its own (a refused
    /// attempt), through the audit queue; returns once it is committed.
    fn record(&self, event: audit::Event) -> impl std::future::Future<Output = Result<()>> + Send;

    /// The log's head: how many entries it holds and the last one's hash
    /// (`None` while it is empty).
    fn audit_head(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<(u64, [u8; 32])>>> + Send;

    /// The head as read after this node's latest group commit of uploads,
    /// without reading the store: it includes every upload answered so
    /// far (`None` before the first, or when it could not be read).
    fn written_head(&self) -> Option<(u64, [u8; 32])>;
}
