//! Store and forward between peers, the sending trust's side: one task a
//! daemon works through the relay queue in the store ([`crate::store::Relays`]),
//! streaming each pack's header and ciphertext chunk by chunk from the
//! store to the peer's `Federation.Relay` (never a whole pack in memory)
//! and recording the peer's signed relay receipt, checked against the
//! peer's pinned daemon key; a failed try is retried with backoff, the
//! queue surviving restarts. The same task passes back to the peers the
//! receipts of packs they relayed here, once this daemon's school has
//! acknowledged them, and passes on to the peers the sending schools'
//! recalls of packs relayed to them.

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

/// Checks `receipt` is `peer`'s word for the pack with `pack_id` and
/// `ciphertext_sha256`.
fn check_receipt(
    peer: &Peer,
    receipt: &v1::RelayReceipt,
    pack_id: &str,
    ciphertext_sha256: &[u8],
) -> anyhow::Result<()> {
    if receipt.pack_id != pack_id || receipt.ciphertext_sha256 != ciphertext_sha256 {
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

/// Open connections to peers, and peers to leave alone for a while.
struct Links {
    data_dir: PathBuf,
    channels: HashMap<String, Channel>,
    paused: HashMap<String, Instant>,
}

impl Links {
    /// A client for `peer`, connecting if needed (a peer that cannot be
    /// reached is paused).
    async fn client(&mut self, peer: &Peer) -> anyhow::Result<FederationClient<Channel>> {
        if let Some(ch) = self.channels.get(&peer.name) {
            return Ok(client(ch.clone()));
        }
        let ch = match channel(peer, &self.data_dir).await {
            Ok(ch) => ch,
            Err(e) => {
                self.failed(&peer.name);
                return Err(e);
            }
        };
        self.channels.insert(peer.name.clone(), ch.clone());
        Ok(client(ch))
    }

    /// Forgets `peer`'s connection and leaves it alone for [`PEER_PAUSE`].
    fn failed(&mut self, peer: &str) {
        self.channels.remove(peer);
        self.paused
            .insert(peer.to_string(), Instant::now() + PEER_PAUSE);
    }

    fn is_paused(&self, peer: &str) -> bool {
        self.paused
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }
}

fn client(ch: Channel) -> FederationClient<Channel> {
    FederationClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Relays one pack to `peer`; the relay receipt, checked.
async fn relay_one<S: Store>(
    app: &Arc<App<S>>,
    links: &mut Links,
    peer: &Peer,
    pack_id: &str,
) -> anyhow::Result<v1::RelayReceipt> {
    let id = pack_id.parse().context("a queued pack id")?;
    let Some(pack) = app.store.pack(id).await.context("reading the pack")? else {
        bail!("the pack is no longer stored");
    };
    let header = v1::PackHeader::decode(pack.header.as_slice()).context("the stored header")?;
    let mut client = links.client(peer).await?;
    let first = v1::RelayMessage {
        part: Some(v1::relay_message::Part::Header(header)),
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
                        part: Some(v1::relay_message::Part::Chunk(data)),
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
        Err(status) => {
            if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown {
                links.failed(&peer.name);
            }
            bail!("{}", super::sync::status_text(&status));
        }
    };
    check_receipt(peer, &receipt, pack_id, &pack.ciphertext_sha256)?;
    Ok(receipt)
}

/// One pass over the relay queue.
async fn relay_due<S: Store>(app: &Arc<App<S>>, links: &mut Links, peers: &[Peer]) {
    let jobs = match app.store.relays_due(now_ms(), BATCH).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "reading the relay queue failed");
            return;
        }
    };
    for job in jobs {
        let outcome = if links.is_paused(&job.peer) {
            Err(anyhow::anyhow!(
                "peer {} could not be reached a moment ago",
                job.peer
            ))
        } else {
            match peers.iter().find(|p| p.name == job.peer) {
                Some(peer) => relay_one(app, links, peer, &job.pack_id).await,
                None => Err(anyhow::anyhow!(
                    "peer {} is no longer added here; the pack waits until it is added again",
                    job.peer
                )),
            }
        };
        let now = now_ms();
        let written = match outcome {
            Ok(receipt) => {
                tracing::info!(pack = %job.pack_id, peer = %job.peer, "pack relayed");
                let event = Event::by_peer(&job.peer, "pack.relay.out", &job.pack_id);
                app.store
                    .relay_done(&job.pack_id, &receipt.encode_to_vec(), now, event)
                    .await
                    .map(|_| ())
            }
            Err(e) => {
                let error = super::sync::clean(&format!("{e:#}"));
                tracing::warn!(pack = %job.pack_id, peer = %job.peer, error = %error, "relaying a pack failed; will try again");
                app.store
                    .relay_failed(&job.pack_id, &error, now + backoff_ms(job.attempts))
                    .await
            }
        };
        if let Err(e) = written {
            tracing::error!(error = %e, pack = %job.pack_id, "recording a relay failed");
        }
    }
}

/// One pass over the receipts to pass back.
async fn return_due<S: Store>(app: &Arc<App<S>>, links: &mut Links, peers: &[Peer]) {
    let jobs = match app.store.receipts_due(now_ms(), BATCH).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "reading the receipts to return failed");
            return;
        }
    };
    for job in jobs {
        let Some(peer) = peers.iter().find(|p| p.name == job.peer) else {
            continue;
        };
        if links.is_paused(&peer.name) {
            continue;
        }
        let outcome = async {
            let receipt =
                v1::Receipt::decode(job.receipt.as_slice()).context("the stored receipt")?;
            let mut client = links.client(peer).await?;
            match client
                .return_receipt(v1::ReturnReceiptRequest {
                    receipt: Some(receipt),
                })
                .await
            {
                Ok(_) => Ok(()),
                // Already recorded there (a retry after a lost answer).
                Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
                Err(s) => {
                    if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
                        links.failed(&peer.name);
                    }
                    Err(anyhow::anyhow!("{}", super::sync::status_text(&s)))
                }
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                let event = Event::by_peer(&peer.name, "receipt.relay.out", &job.pack_id);
                if let Err(e) = app
                    .store
                    .receipt_returned(&job.pack_id, now_ms(), event)
                    .await
                {
                    tracing::error!(error = %e, pack = %job.pack_id, "recording a returned receipt failed");
                }
            }
            Err(e) => {
                let error = super::sync::clean(&format!("{e:#}"));
                tracing::warn!(pack = %job.pack_id, peer = %peer.name, error = %error, "passing a receipt back failed; will try again");
                let next = now_ms() + backoff_ms(job.attempts);
                if let Err(e) = app.store.relay_failed(&job.pack_id, &error, next).await {
                    tracing::error!(error = %e, pack = %job.pack_id, "recording a failed receipt return failed");
                }
            }
        }
    }
}

/// One pass over the recalls to pass on.
async fn recall_due<S: Store>(app: &Arc<App<S>>, links: &mut Links, peers: &[Peer]) {
    let jobs = match app.store.recalls_due(BATCH).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "reading the recalls to pass on failed");
            return;
        }
    };
    for job in jobs {
        let Some(peer) = peers.iter().find(|p| p.name == job.peer) else {
            continue;
        };
        if links.is_paused(&peer.name) {
            continue;
        }
        let outcome = async {
            let recall = v1::Recall::decode(job.receipt.as_slice()).context("the stored recall")?;
            let mut client = links.client(peer).await?;
            client
                .relay_recall(v1::RelayRecallRequest {
                    recall: Some(recall),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", super::sync::status_text(&s)))
        }
        .await;
        match outcome {
            Ok(answer) => {
                let state = v1::PackState::try_from(answer.get_ref().state)
                    .map_or("unknown", |s| s.as_str_name());
                tracing::info!(pack = %job.pack_id, peer = %peer.name, state, "recall passed on");
                let event = Event::by_peer(
                    &peer.name,
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
                let error = super::sync::clean(&format!("{e:#}"));
                tracing::warn!(pack = %job.pack_id, peer = %peer.name, error = %error, "passing a recall on failed; will try again");
                links.failed(&peer.name);
            }
        }
    }
}

/// Works through the queues every second until shutdown.
pub async fn watch<S: Store>(app: Arc<App<S>>, data_dir: PathBuf) {
    let mut links = Links {
        data_dir,
        channels: HashMap::new(),
        paused: HashMap::new(),
    };
    loop {
        match app.store.peers().await {
            Ok(peers) => {
                links
                    .channels
                    .retain(|name, _| peers.iter().any(|p| &p.name == name));
                relay_due(&app, &mut links, &peers).await;
                recall_due(&app, &mut links, &peers).await;
                return_due(&app, &mut links, &peers).await;
            }
            Err(e) => tracing::error!(error = %e, "reading the peers failed"),
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
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
