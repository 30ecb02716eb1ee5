//! Chasing: the daemon looks for packs that have become overdue (not
//! acknowledged, past their due date) when it starts and every quarter of
//! an hour, and logs each once per run, naming the pack, the schools, the
//! kind and the due date, never the pupil (the daemon does not know them).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use baton::api::v1;
use prost::Message as _;

use super::Clocks;
use crate::app::App;
use crate::store::Store;

/// How often the daemon looks.
const EVERY: Duration = Duration::from_secs(15 * 60);

/// Looks now and then every [`EVERY`], until the daemon shuts down.
pub async fn watch<S: Store>(app: Arc<App<S>>) {
    let mut logged: HashSet<i64> = HashSet::new();
    loop {
        if let Err(e) = look(&app, &mut logged).await {
            tracing::warn!(error = %e, "could not look for overdue packs");
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// A pack past its due date and not acknowledged.
pub struct Overdue {
    /// The stored pack (metadata).
    pub pack: crate::store::StoredPack,
    /// Its signed header, decoded.
    pub header: v1::PackHeader,
    /// The day it was due.
    pub due: time::Date,
}

/// Every pack overdue today, in storage order.
pub async fn overdue<S: Store>(store: &S) -> anyhow::Result<Vec<Overdue>> {
    let packs = store.unacknowledged().await?;
    let clocks = Clocks::load(store).await?;
    let today = baton::dates::england_today();
    let mut out = Vec::new();
    for p in packs {
        let Ok(header) = v1::PackHeader::decode(p.header.as_slice()) else {
            continue;
        };
        if let Some(due) = clocks.due_of(&header)
            && today > due
        {
            out.push(Overdue {
                pack: p,
                header,
                due,
            });
        }
    }
    Ok(out)
}

/// Logs every overdue pack not logged before; returns how many it logged.
async fn look<S: Store>(app: &App<S>, logged: &mut HashSet<i64>) -> anyhow::Result<usize> {
    let mut new = 0;
    for o in overdue(&app.store).await? {
        if !logged.insert(o.pack.seq) {
            continue;
        }
        tracing::warn!(
            pack = %o.header.pack_id,
            from = %o.pack.from,
            to = %o.pack.to,
            kind = crate::services::wire::kind_of(&o.header).as_str(),
            due = %baton::dates::format_ymd(o.due),
            "pack overdue: not acknowledged by its due date"
        );
        new += 1;
    }
    if new > 0 {
        tracing::info!(new, "overdue packs found");
    }
    Ok(new)
}
