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

/// Logs every overdue pack not logged before; returns how many it logged.
async fn look<S: Store>(app: &App<S>, logged: &mut HashSet<i64>) -> anyhow::Result<usize> {
    let packs = app.store.unacknowledged().await?;
    let clocks = Clocks::load(&app.store).await?;
    let today = baton::dates::england_today();
    let mut new = 0;
    for p in packs {
        if logged.contains(&p.seq) {
            continue;
        }
        let Ok(header) = v1::PackHeader::decode(p.header.as_slice()) else {
            continue;
        };
        if let Some(due) = clocks.due_of(&header)
            && today > due
        {
            tracing::warn!(
                pack = %header.pack_id,
                from = %p.from,
                to = %p.to,
                kind = crate::services::wire::kind_of(&header).as_str(),
                due = %baton::dates::format_ymd(due),
                "pack overdue: not acknowledged by its due date"
            );
            logged.insert(p.seq);
            new += 1;
        }
    }
    if new > 0 {
        tracing::info!(new, "overdue packs found");
    }
    Ok(new)
}
