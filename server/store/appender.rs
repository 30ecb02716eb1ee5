//! The audit queue: audit events that come with no write of their own (an
//! inbox or sent listing) are queued and appended in groups, one write
//! transaction for everything queued, instead of each listing opening a
//! write transaction around its read. A listing is answered only once its
//! entry is committed, so the chain means what it always meant: every
//! answered call is in the log, in the order its entry was appended.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};
use crate::audit;

/// The most events one transaction appends.
const MAX_GROUP: usize = 512;

/// Appends a group of events in one transaction.
pub trait AppendWriter: Send + Sync + 'static {
    /// Appends every `(at_ms, event)` of `events`, in order, in one
    /// transaction; `Err` means none was appended.
    fn append_all<'a>(
        &'a self,
        events: &'a [(i64, audit::Event)],
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

type Queued = (i64, audit::Event, oneshot::Sender<Result<()>>);

/// A handle that queues events for the appender task.
#[derive(Debug, Clone)]
pub struct Appender {
    queue: mpsc::Sender<Queued>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("the audit queue has stopped".into())
}

impl Appender {
    /// Starts the appender task over `writer`; it ends when every handle is
    /// dropped.
    pub fn start(writer: impl AppendWriter) -> Self {
        let (queue, events) = mpsc::channel(MAX_GROUP);
        tokio::spawn(run(Arc::new(writer), events));
        Self { queue }
    }

    /// Queues `event` (at `now_ms`) and waits until it is committed.
    pub async fn append(&self, now_ms: i64, event: audit::Event) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send((now_ms, event, reply))
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}

async fn run<W: AppendWriter>(writer: Arc<W>, mut queue: mpsc::Receiver<Queued>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (events, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|(at, e, r)| ((at, e), r)).unzip();
        let written = writer.append_all(&events).await;
        let failure = written.as_ref().err().map(ToString::to_string);
        if let Some(why) = &failure {
            tracing::error!(error = %why, events = events.len(), "appending audit entries failed");
        }
        for reply in replies {
            let _ = reply.send(match &failure {
                None => Ok(()),
                Some(why) => Err(StoreError::Unavailable(format!(
                    "appending the audit entry failed: {why}"
                ))),
            });
        }
    }
}
