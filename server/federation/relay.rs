//! Store and forward between peers, the sending trust's side: one task a
//! peer works through the relay queue in the store ([`crate::store::Relays`]),
//! streaming each pack's header and ciphertext chunk by chunk from the
//! store to the peer's `Federation.Relay` (never a whole pack in memory)
//! and recording the peer's signed relay receipt, checked against the
//! peer's pinned daemon key; a failed try is retried with backoff, the
//! queue surviving restarts. The same task passes back to the peers the
//! receipts of packs they relayed here, once this daemon's school has
//! acknowledged them (and, before that, their collection or purge), and
//! passes on to the peers the sending schools' recalls of packs relayed to
//! them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use baton::api::v1;
use baton::api::v1::federation_client::FederationClient;
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use tonic::transport::Channel;

use super::tls::channel;
use crate::app::App;
use crate::audit::Event;
use crate::services::MAX_MESSAGE_BYTES;
use crate::store::{Peer, Store, now_ms};

/// The context a relay receipt's statement starts with.
const RECEIPT_CONTEXT: &[u8] = b"baton relay receipt v1\n";
/// How often the queues are looked at.
const POLL: Duration = Duration::from_secs(1);
/// Packs (and receipts) taken from a queue at a time.
const BATCH: i64 = 16;
/// Longest wait between tries of one pack.
const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;
/// How long a peer that could not be reached is left alone.
const PEER_PAUSE: Duration = Duration::from_secs(5);
/// How often the peers are read, to start and stop their workers.
const PEERS_POLL: Duration = Duration::from_secs(2);

/// The bytes a relay receipt's signature covers: its fields,
/// length-prefixed, after [`RECEIPT_CONTEXT`].
pub fn receipt_statement(
    pack_id: &str,
    ciphertext_sha256: &[u8],
    to: &str,
    stored_at_ms: i64,
) -> Vec<u8> {
    let mut out = RECEIPT_CONTEXT.to_vec();
    for field in [
        pack_id.as_bytes(),
        ciphertext_sha256,
        to.as_bytes(),
        &stored_at_ms.to_be_bytes(),
    ] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// Checks `receipt` is `peer`'s word for the pack `header` describes.
fn check_receipt(
    peer: &Peer,
    receipt: &v1::RelayReceipt,
    header: &v1::PackHeader,
) -> anyhow::Result<()> {
    if receipt.pack_id != header.pack_id
        || receipt.ciphertext_sha256 != header.ciphertext_sha256
        || receipt.to != header.to
    {
        bail!("its relay receipt names another pack");
    }
    let key = VerifyingKey::from_bytes(&peer.daemon_key).context("the peer's daemon key")?;
    let signature = Signature::from_slice(&receipt.signature)
        .context("its relay receipt's signature is malformed")?;
    key.verify_strict(
        &receipt_statement(
            &receipt.pack_id,
            &receipt.ciphertext_sha256,
            &receipt.to,
            receipt.stored_at_ms,
        ),
        &signature,
    )
    .context("its relay receipt is not signed by its daemon key")
}

/// When to try a pack again after `attempts` failed tries.
fn backoff_ms(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    1000_i64
        .saturating_mul(1 << exp.min(12))
        .min(MAX_BACKOFF_MS)
}

/// One peer's connection, and until when it is left alone after a failure.
struct Link {
    peer: Peer,
    data_dir: PathBuf,
    channel: Option<Channel>,
    paused_until: Option<Instant>,
}

impl Link {
    /// A client for the peer, connecting if needed (a peer that cannot be
    /// reached is paused).
    async fn client(&mut self) -> anyhow::Result<FederationClient<Channel>> {
        if let Some(ch) = &self.channel {
            return Ok(client(ch.clone()));
        }
        match channel(&self.peer, &self.data_dir).await {
            Ok(ch) => {
                self.channel = Some(ch.clone());
                Ok(client(ch))
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    /// Forgets the connection and leaves the peer alone for [`PEER_PAUSE`].
    fn failed(&mut self) {
        self.channel = None;
        self.paused_until = Some(Instant::now() + PEER_PAUSE);
    }

    fn is_paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| until > Instant::now())
    }

    /// A failed call: a connection that broke is opened afresh next time.
    fn call_failed(&mut self, status: &tonic::Status) -> anyhow::Error {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) {
            self.failed();
        }
        anyhow::anyhow!("{}", super::sync::status_text(status))
    }
}

fn client(ch: Channel) -> FederationClient<Channel> {
    FederationClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Relays one pack; the relay receipt, checked.
async fn relay_one<S: Store>(
    app: &Arc<App<S>>,
    link: &mut Link,
    pack_id: &str,
) -> anyhow::Result<v1::RelayReceipt> {
    let id = pack_id.parse().context("a queued pack id")?;
    let Some(pack) = app.store.pack(id).await.context("reading the pack")? else {
        bail!("the pack is no longer stored");
    };
    let header = v1::PackHeader::decode(pack.header.as_slice()).context("the stored header")?;
    let mut client = link.client().await?;
    let first = v1::RelayMessage {
        part: Some(v1::relay_message::Part::Header(header.clone())),
    };
    // The chunks are read from the store one at a time as the stream is
    // polled: flow control, not the pack's size, bounds what is held.
    let store_app = app.clone();
    let upload_id = pack.upload_id.clone();
    let chunks = pack.chunks;
    let rest = futures_util::stream::unfold(0_i64, move |idx| {
        let app = store_app.clone();
        let upload_id = upload_id.clone();
        async move {
            if idx >= chunks {
                return None;
            }
            match app.store.chunk(&upload_id, idx).await {
                Ok(data) => Some((
                    v1::RelayMessage {
                        part: Some(v1::relay_message::Part::Chunk(data.into())),
                    },
                    idx + 1,
                )),
                Err(e) => {
                    // Ending early makes the peer refuse the short pack.
                    tracing::error!(error = %e, "reading a chunk to relay failed");
                    None
                }
            }
        }
    });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([first]), rest);
    let receipt = match client.relay(stream).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(link.call_failed(&status)),
    };
    check_receipt(&link.peer, &receipt, &header)?;
    Ok(receipt)
}

/// Deletes this daemon's copy of a pack the peer confirmed it holds.
async fn release<S: Store>(
    app: &Arc<App<S>>,
    peer: &str,
    pack_id: &str,
    sha256: &[u8],
) -> crate::store::Result<()> {
    let Ok(id) = pack_id.parse::<baton::pack::PackId>() else {
        return Ok(());
    };
    let event = Event::by_peer(
        peer,
        "pack.relay.release",
        crate::store::lifecycle::deletion_record(id, sha256, "relayed"),
    );
    app.store
        .release_relayed(id, now_ms(), event)
        .await
        .map(|_| ())
}

/// A queue's due jobs, or none (logged) if it cannot be read.
fn due<T>(queue: &str, read: crate::store::Result<Vec<T>>) -> Vec<T> {
    read.unwrap_or_else(|e| {
        tracing::error!(error = %e, queue, "reading a relay queue failed");
        Vec::new()
    })
}

/// One pass over the packs to relay to the link's peer.
async fn relay_due<S: Store>(app: &Arc<App<S>>, link: &mut Link) {
    let name = link.peer.name.clone();
    let jobs = due("relay", app.store.relays_due(&name, now_ms(), BATCH).await);
    for job in jobs {
        let outcome = if link.is_paused() {
            Err(anyhow::anyhow!(
                "peer {name} could not be reached a moment ago"
            ))
        } else {
            relay_one(app, link, &job.pack_id).await
        };
        let receipt = match outcome {
            Ok(receipt) => receipt,
            Err(e) => {
                failed(
                    app,
                    &job.pack_id,
                    &name,
                    job.attempts,
                    "relaying a pack",
                    &e,
                )
                .await;
                continue;
            }
        };
        tracing::info!(pack = %job.pack_id, peer = %name, "pack relayed");
        let event = Event::by_peer(&name, "pack.relay.out", &job.pack_id);
        let written = match app
            .store
            .relay_done(&job.pack_id, &receipt.encode_to_vec(), now_ms(), event)
            .await
        {
            // The peer holds it now: this daemon's copy goes.
            Ok(_) => release(app, &name, &job.pack_id, &receipt.ciphertext_sha256).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, pack = %job.pack_id, "recording a relay failed");
        }
    }
}

/// One pass over the receipts to pass back to the link's peer.
async fn return_due<S: Store>(app: &Arc<App<S>>, link: &mut Link) {
    let name = link.peer.name.clone();
    let jobs = due(
        "receipts",
        app.store.receipts_due(&name, now_ms(), BATCH).await,
    );
    for job in jobs {
        if link.is_paused() {
            return;
        }
        let outcome = async {
            let receipt =
                v1::Receipt::decode(job.receipt.as_slice()).context("the stored receipt")?;
            let mut client = link.client().await?;
            match client
                .return_receipt(v1::ReturnReceiptRequest {
                    receipt: Some(receipt),
                })
                .await
            {
                Ok(_) => Ok(()),
                // Already recorded there (a retry after a lost answer).
                Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
                Err(s) => Err(link.call_failed(&s)),
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                let event = Event::by_peer(&name, "receipt.relay.out", &job.pack_id);
                if let Err(e) = app
                    .store
                    .receipt_returned(&job.pack_id, now_ms(), event)
                    .await
                {
                    tracing::error!(error = %e, pack = %job.pack_id, "recording a returned receipt failed");
                }
            }
            Err(e) => {
                failed(
                    app,
                    &job.pack_id,
                    &name,
                    job.attempts,
                    "passing a receipt back",
                    &e,
                )
                .await
            }
        }
    }
}

/// One pass over the recalls to pass on to the link's peer.
async fn recall_due<S: Store>(app: &Arc<App<S>>, link: &mut Link) {
    let name = link.peer.name.clone();
    let jobs = due(
        "recalls",
        app.store.recalls_due(&name, now_ms(), BATCH).await,
    );
    for job in jobs {
        if link.is_paused() {
            return;
        }
        let outcome = async {
            let recall = v1::Recall::decode(job.receipt.as_slice()).context("the stored recall")?;
            let mut client = link.client().await?;
            match client
                .relay_recall(v1::RelayRecallRequest {
                    recall: Some(recall),
                })
                .await
            {
                Ok(answer) => Ok(v1::PackState::try_from(answer.get_ref().state)
                    .map_or("unknown", |s| s.as_str_name())),
                // It never reached the peer (a relay that failed, or was
                // withdrawn before it went): nothing there to withdraw.
                Err(s) if s.code() == tonic::Code::NotFound => Ok("not there"),
                Err(s) => Err(link.call_failed(&s)),
            }
        }
        .await;
        match outcome {
            Ok(state) => {
                tracing::info!(pack = %job.pack_id, peer = %name, state, "recall passed on");
                let event = Event::by_peer(
                    &name,
                    "pack.recall.relay.out",
                    format!("{} {state}", job.pack_id),
                );
                if let Err(e) = app
                    .store
                    .recall_relayed(&job.pack_id, now_ms(), event)
                    .await
                {
                    tracing::error!(error = %e, pack = %job.pack_id, "recording a passed-on recall failed");
                }
            }
            Err(e) => {
                failed(
                    app,
                    &job.pack_id,
                    &name,
                    job.attempts,
                    "passing a recall on",
                    &e,
                )
                .await
            }
        }
    }
}

/// Records a failed try of `what` for `pack_id`, to try again after a
/// backoff (the peer is paused only if the connection failed).
async fn failed<S: Store>(
    app: &Arc<App<S>>,
    pack_id: &str,
    peer: &str,
    attempts: i64,
    what: &str,
    e: &anyhow::Error,
) {
    let error = super::sync::clean(&format!("{e:#}"));
    tracing::warn!(pack = %pack_id, peer, error = %error, "{what} failed; will try again");
    let next = now_ms() + backoff_ms(attempts);
    if let Err(e) = app.store.relay_failed(pack_id, &error, next).await {
        tracing::error!(error = %e, pack = %pack_id, "recording a failed try failed");
    }
}

/// One pass over the states to report back to the link's peer.
async fn report_due<S: Store>(app: &Arc<App<S>>, link: &mut Link) {
    let name = link.peer.name.clone();
    let jobs = due("states", app.store.states_due(&name, now_ms(), BATCH).await);
    for job in jobs {
        if link.is_paused() {
            return;
        }
        let state = if job.status == "purged" {
            v1::PackState::Purged
        } else {
            v1::PackState::Downloaded
        };
        let outcome = async {
            let mut client = link.client().await?;
            client
                .report_state(v1::ReportStateRequest {
                    pack_id: job.pack_id.clone(),
                    state: state as i32,
                    purge_reason: job.purge_reason.clone().unwrap_or_default(),
                })
                .await
                .map_err(|s| link.call_failed(&s))
        }
        .await;
        match outcome {
            Ok(_) => {
                if let Err(e) = app.store.state_reported(&job.pack_id, &job.status).await {
                    tracing::error!(error = %e, pack = %job.pack_id, "recording a reported state failed");
                }
            }
            Err(e) => {
                failed(
                    app,
                    &job.pack_id,
                    &name,
                    job.attempts,
                    "reporting a state",
                    &e,
                )
                .await
            }
        }
    }
}

/// Deletes this daemon's copy of packs the peer holds whose deletion did
/// not follow the relay receipt (a daemon stopped in between).
async fn release_due<S: Store>(app: &Arc<App<S>>, link: &Link) {
    let name = &link.peer.name;
    match app.store.unreleased(name, BATCH).await {
        Ok(packs) => {
            for (pack_id, sha256) in packs {
                if let Err(e) = release(app, name, &pack_id, &sha256).await {
                    tracing::error!(error = %e, pack = %pack_id, "deleting a relayed pack's copy failed");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reading the relayed packs still held failed"),
    }
}

/// One peer's worker: its queues every second, until aborted or
/// shutdown. A slow or absent peer delays only its own packs.
async fn worker<S: Store>(app: Arc<App<S>>, peer: Peer, data_dir: PathBuf) {
    let mut link = Link {
        peer,
        data_dir,
        channel: None,
        paused_until: None,
    };
    loop {
        relay_due(&app, &mut link).await;
        release_due(&app, &link).await;
        recall_due(&app, &mut link).await;
        report_due(&app, &mut link).await;
        return_due(&app, &mut link).await;
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Keeps one [`worker`] a peer (started when a peer is added, stopped
/// when it is removed or its descriptor replaced), until shutdown.
pub async fn watch<S: Store>(app: Arc<App<S>>, data_dir: PathBuf) {
    let mut workers: HashMap<String, (Peer, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        match app.store.peers().await {
            Ok(peers) => {
                workers.retain(|name, (known, task)| {
                    let keep = peers.iter().any(|p| p == known && &p.name == name);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for peer in peers {
                    if !workers.contains_key(&peer.name) {
                        let task =
                            tokio::spawn(worker(app.clone(), peer.clone(), data_dir.clone()));
                        workers.insert(peer.name.clone(), (peer, task));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the peers failed"),
        }
        tokio::select! {
            () = app.shutdown.cancelled() => {
                for (_, task) in workers.values() {
                    task.abort();
                }
                return;
            }
            () = tokio::time::sleep(PEERS_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_five_minutes() {
        assert_eq!(backoff_ms(0), 1000);
        assert_eq!(backoff_ms(3), 8000);
        assert_eq!(backoff_ms(50), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(-1), 1000);
    }

    #[test]
    fn receipt_statements_differ_by_every_field() {
        let base = receipt_statement("a", &[1; 32], "8614001", 5);
        for other in [
            receipt_statement("b", &[1; 32], "8614001", 5),
            receipt_statement("a", &[2; 32], "8614001", 5),
            receipt_statement("a", &[1; 32], "8614002", 5),
            receipt_statement("a", &[1; 32], "8614001", 6),
        ] {
            assert_ne!(base, other);
        }
        assert!(base.starts_with(RECEIPT_CONTEXT));
    }
}
