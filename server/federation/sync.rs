//! Keeping up with the peers: one task per daemon reads the peers from the
//! store every few seconds (so `batond admin peer add|remove`, run in
//! another process, takes effect on the listener's pins without a
//! restart), and reads each peer's directory over mutual TLS when it is
//! added and then every `federation_sync_secs`. What a peer answers is
//! checked ([`super::directory::checked`]) and replaces its stored
//! directory; a peer that cannot be reached keeps its last directory, and
//! the error is recorded for `batond admin peer list`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use baton::api::v1;
use baton::api::v1::federation_client::FederationClient;

use super::tls::{PeerVerifier, channel};
use crate::app::App;
use crate::services::MAX_MESSAGE_BYTES;
use crate::store::{Peer, Store, now_ms};

/// How often the peers are read from the store.
const PEERS_POLL: Duration = Duration::from_secs(2);
/// Longest one peer's directory read may take.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);
/// How soon a failed read of a peer's directory is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Least time between two reads of one peer's directory on demand.
const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// Reading a peer's directory on demand: when a peer relays a pack from a
/// school (or signed by a key) this daemon has not seen yet, because the
/// school enrolled after the last regular read.
pub struct Resync {
    data_dir: PathBuf,
    last: std::sync::Mutex<BTreeMap<String, Instant>>,
}

impl Resync {
    /// For the federation identity under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            last: std::sync::Mutex::default(),
        }
    }

    /// Reads `peer`'s directory now, unless it was read on demand in the
    /// last [`RESYNC_EVERY`]; whether it was read.
    pub async fn now<S: Store>(&self, store: &S, peer: &str) -> bool {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last
                .get(peer)
                .is_some_and(|at| now.duration_since(*at) < RESYNC_EVERY)
            {
                return false;
            }
            last.insert(peer.to_string(), now);
        }
        let Ok(peers) = store.peers().await else {
            return false;
        };
        let Some(found) = peers.iter().find(|p| p.name == peer) else {
            return false;
        };
        match tokio::time::timeout(SYNC_DEADLINE, sync_one(store, found, &self.data_dir)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(peer, error = %clean(&format!("{e:#}")), "reading a peer's directory on demand failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// What a peer said when asked.
pub struct Answer {
    /// The name it knows this daemon by.
    pub caller_name: String,
    /// Its schools, as checked and kept (its escrow not counted).
    pub schools: usize,
    /// What was left out of its directory, and why.
    pub problems: Vec<String>,
}

/// Asks `peer` who it is and for its directory, and stores what it
/// answered; an error says why nothing was stored.
pub async fn sync_one<S: Store>(
    store: &S,
    peer: &Peer,
    data_dir: &std::path::Path,
) -> anyhow::Result<Answer> {
    let channel = channel(peer, data_dir).await?;
    let mut client = FederationClient::new(channel)
        .max_decoding_message_size(super::directory::MAX_DIRECTORY_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hello = client
        .hello(v1::HelloRequest {})
        .await
        .map_err(|s| anyhow::anyhow!(status_text(&s)))
        .context("asking who it is")?
        .into_inner();
    if hello.daemon_key != peer.daemon_key {
        bail!(
            "it answered with another daemon key than its descriptor's; nothing was read from it"
        );
    }
    let answer = client
        .peer_schools(v1::PeerSchoolsRequest {})
        .await
        .map_err(|s| anyhow::anyhow!(status_text(&s)))
        .context("reading its directory")?
        .into_inner();
    let (kept, problems) = super::directory::checked(&answer.schools, &peer.la_codes);
    if !store
        .replace_peer_schools(&peer.name, &kept, now_ms())
        .await
        .context("storing its directory")?
    {
        bail!("it was removed meanwhile");
    }
    if !problems.is_empty() {
        let text = clean(&format!(
            "left out of its directory: {}",
            problems.join("; ")
        ));
        store
            .peer_sync_failed(&peer.name, &text, now_ms())
            .await
            .context("recording what was left out")?;
    }
    Ok(Answer {
        caller_name: hello.caller_name,
        schools: kept
            .iter()
            .filter(|(laestab, _)| laestab != baton::Laestab::ESCROW.as_str())
            .count(),
        problems,
    })
}

/// Text a peer sent (its refusals, its schools' names in a problem) made
/// safe to store, log and print: control characters replaced (no
/// terminal escapes), at most 2,000 characters.
pub fn clean(text: &str) -> String {
    const MAX: usize = 2000;
    let mut out: String = text
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A peer's refusal in words: its code and message, and for a failed
/// connection the cause underneath (a TLS alert, say) and what to check.
pub fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    let connection = source.is_some();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if connection {
        text.push_str(
            " (is the peer's federation listener up, and has its operator added this daemon's \
             descriptor? A peer that is not added refuses this daemon's certificate; adding or \
             removing a peer takes effect within seconds)",
        );
    }
    text
}

/// Re-pins `verifier` when the peers change (read every [`PEERS_POLL`],
/// in a task of its own so no slow sync delays a removal), and syncs each
/// peer's directory when added and every `every`, until shutdown.
pub async fn watch<S: Store>(
    app: Arc<App<S>>,
    verifier: Arc<PeerVerifier>,
    data_dir: PathBuf,
    every: Duration,
) {
    tokio::spawn(pin(app.clone(), verifier));
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let peers = match app.store.peers().await {
            Ok(peers) => peers,
            Err(e) => {
                tracing::error!(error = %e, "reading the federation peers failed");
                Vec::new()
            }
        };
        due.retain(|name, _| peers.iter().any(|p| &p.name == name));
        for peer in &peers {
            let now = Instant::now();
            if due.get(&peer.name).is_some_and(|at| *at > now) {
                continue;
            }
            due.insert(peer.name.clone(), now + every);
            let synced = tokio::time::timeout(SYNC_DEADLINE, sync_one(&app.store, peer, &data_dir))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "no answer within {} s",
                        SYNC_DEADLINE.as_secs()
                    ))
                });
            match synced {
                Ok(answer) => tracing::info!(
                    peer = %peer.name,
                    schools = answer.schools,
                    left_out = answer.problems.len(),
                    "peer directory read"
                ),
                Err(e) => {
                    // Soon again (a peer just added may not have taken
                    // this daemon up yet), not a whole interval later.
                    due.insert(
                        peer.name.clone(),
                        Instant::now() + every.min(RETRY_AFTER_FAILURE),
                    );
                    let error = clean(&format!("{e:#}"));
                    tracing::warn!(peer = %peer.name, error = %error, "reading a peer's directory failed");
                    if let Err(e) = app
                        .store
                        .peer_sync_failed(&peer.name, &error, now_ms())
                        .await
                    {
                        tracing::error!(error = %e, "recording a failed peer sync failed");
                    }
                }
            }
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(PEERS_POLL) => {}
        }
    }
}

/// Keeps `verifier`'s pins equal to the peers in the store.
async fn pin<S: Store>(app: Arc<App<S>>, verifier: Arc<PeerVerifier>) {
    let mut known: Option<Vec<Peer>> = None;
    loop {
        match app.store.peers().await {
            Ok(peers) if known.as_ref() != Some(&peers) => {
                verifier.pin(&peers);
                tracing::info!(peers = peers.len(), "federation peers read again");
                known = Some(peers);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reading the federation peers failed"),
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(PEERS_POLL) => {}
        }
    }
}
