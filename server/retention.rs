//! Retention: the daemon purges packs' ciphertext hourly (and `batond admin
//! purge` on demand) once the configured days have passed, keeping each
//! pack's row (header, receipt, times) with its state `purged` and writing
//! a deletion record (pack id, ciphertext SHA-256, reason) to the audit
//! chain. The same run finishes any supersede or re-address a stopped
//! daemon left half done (the new pack stored, the one it replaces or
//! forwards not yet marked).

use std::sync::Arc;
use std::time::Duration;

use baton::pack::PackId;

use crate::app::App;
use crate::audit::Event;
use crate::config::Retention;
use crate::store::lifecycle::deletion_record;
use crate::store::{Store, StoredPack, Withdrawal, now_ms};

/// How often the daemon purges.
const EVERY: Duration = Duration::from_secs(60 * 60);

/// One pack purged (or, in a dry run, that would be).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Purged {
    /// The pack's id.
    pub pack_id: String,
    /// Sending school.
    pub from: String,
    /// Destination school.
    pub to: String,
    /// SHA-256 of the ciphertext deleted, hex.
    pub ciphertext_sha256: String,
    /// Why: `acknowledged`, `not collected` or `not acknowledged`.
    pub reason: &'static str,
}

/// Why a candidate goes, as the store will decide it under lock.
fn expected_reason(p: &StoredPack) -> &'static str {
    use crate::store::lifecycle::reason;
    if p.acknowledged_at_ms.is_some() {
        reason::ACKNOWLEDGED
    } else if p.downloaded_at_ms.is_some() {
        reason::NOT_ACKNOWLEDGED
    } else {
        reason::NOT_COLLECTED
    }
}

/// Purges every pack `retention` says goes at `now`, as `actor` (`admin` or
/// `daemon`); with `dry_run`, only lists them. Then makes the deleted bytes
/// unrecoverable from the database's files where the backend can.
pub async fn purge<S: Store>(
    store: &S,
    retention: Retention,
    now: i64,
    actor: &str,
    dry_run: bool,
) -> anyhow::Result<Vec<Purged>> {
    let cutoffs = retention.cutoffs(now);
    let mut done = Vec::new();
    for p in store.purge_candidates(cutoffs).await? {
        let Some(id) = pack_id(&p) else { continue };
        let reason = if dry_run {
            Some(expected_reason(&p))
        } else {
            store.purge(id, cutoffs, now, actor).await?
        };
        // None: acknowledged, withdrawn or purged by another node since.
        if let Some(reason) = reason {
            if !dry_run {
                metrics::counter!("baton_purged_packs_total", "reason" => reason).increment(1);
            }
            done.push(Purged {
                pack_id: id.to_string(),
                from: p.from.to_string(),
                to: p.to.to_string(),
                ciphertext_sha256: hex::encode(p.ciphertext_sha256),
                reason,
            });
        }
    }
    if !dry_run && !done.is_empty() && !store.reclaim().await? {
        tracing::warn!(
            "the database's write-ahead log was busy: purged bytes leave it at the next purge"
        );
    }
    Ok(done)
}

/// The pack id a stored header names.
fn pack_id(p: &StoredPack) -> Option<PackId> {
    use prost::Message as _;
    let header = baton::api::v1::PackHeader::decode(p.header.as_slice()).ok()?;
    header.pack_id.parse().ok()
}

/// Withdraws `old`, superseded by the stored pack `new` whose signed header
/// names it, sent by `from`; idempotent.
pub async fn supersede<S: Store>(
    store: &S,
    from: &baton::Laestab,
    new: PackId,
    old: PackId,
) -> anyhow::Result<()> {
    let Some(original) = store.pack(old).await? else {
        return Ok(());
    };
    let event = Event::by_school(
        from,
        "pack.supersede",
        deletion_record(
            old,
            &original.ciphertext_sha256,
            &format!("superseded by {new}"),
        ),
    );
    store
        .withdraw(old, Withdrawal::Supersede(new), now_ms(), event)
        .await?;
    Ok(())
}

/// Finishes supersedes and re-addresses a stopped daemon left half done.
async fn relink<S: Store>(store: &S) -> anyhow::Result<usize> {
    let pending = store.unlinked_supersedes().await?;
    for (new, old) in &pending {
        if let Some(p) = store.pack(*new).await? {
            supersede(store, &p.from, *new, *old).await?;
        }
    }
    let forwarded = store.unlinked_readdresses().await?;
    for (new, old) in &forwarded {
        if let Some(p) = store.pack(*new).await? {
            crate::services::exchange::readdress::mark(store, *new, *old, p.to).await?;
        }
    }
    Ok(pending.len() + forwarded.len())
}

/// Purges now and then every [`EVERY`], until the daemon shuts down.
pub async fn watch<S: Store>(app: Arc<App<S>>) {
    let mut first = true;
    loop {
        match relink(&app.store).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "finished supersedes left half done"),
            Err(e) => tracing::warn!(error = %e, "could not finish supersedes"),
        }
        match purge(&app.store, app.retention, now_ms(), "daemon", false).await {
            Ok(done) if done.is_empty() => {}
            Ok(done) => tracing::info!(packs = done.len(), "retention purged packs' ciphertext"),
            Err(e) => tracing::warn!(error = %e, "could not purge"),
        }
        if std::mem::take(&mut first) {
            tracing::info!("retention's start-up run done (then hourly)");
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
