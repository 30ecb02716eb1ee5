//! Arrivals: packs just made visible, announced to `Watch` subscribers on
//! every node sharing the database.

use std::future::Future;

use baton::Laestab;
use tokio::sync::broadcast;

use super::error::Result;

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

/// Announcing packs as they become visible.
pub trait Events: Send + Sync {
    /// Starts delivering arrivals to [`Events::subscribe`], including packs
    /// stored by other nodes sharing the database. `serve` calls it once
    /// before taking calls; admin commands never do.
    fn listen(&self) -> impl Future<Output = Result<()>> + Send;

    /// Packs made visible from now on (after [`Events::listen`]).
    fn subscribe(&self) -> broadcast::Receiver<Arrival>;
}
