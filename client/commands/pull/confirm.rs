//! Telling the server which pulled packs are written (`ConfirmDownloads`):
//! each pack is handed over as soon as its folder is in place, and one
//! task sends whatever has gathered while its previous call was on the
//! wire, so a pull of a few packs tells the server at once and a pull of
//! hundreds does it in a few calls. From a server without
//! `ConfirmDownloads`, one `ConfirmDownload` a pack.

use baton::api::v1;
use baton::pack::PackId;
use tokio::sync::mpsc;
use v1::exchange_client::ExchangeClient;

use crate::connect::Authed;

/// Confirmations sent in one call at most (the server takes 500).
const PER_CALL: usize = 200;

/// The task telling the server, and the way to hand it packs.
pub(super) struct Confirmer {
    tx: mpsc::UnboundedSender<(PackId, String)>,
    task: tokio::task::JoinHandle<Vec<PackId>>,
}

impl Confirmer {
    /// Starts the task on `exchange`.
    pub(super) fn start(exchange: ExchangeClient<Authed>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(PackId, String)>();
        let task = tokio::spawn(async move {
            let mut untold = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < PER_CALL
                    && let Ok(next) = rx.try_recv()
                {
                    batch.push(next);
                }
                untold.extend(send(&exchange, batch).await);
            }
            untold
        });
        Self { tx, task }
    }

    /// Tells the server, soon, that pack `id` (ciphertext SHA-256
    /// `sha256_hex`) is written.
    pub(super) fn tell(&self, id: PackId, sha256_hex: &str) {
        // The task ends only when this sender is dropped, in `finish`.
        let _ = self.tx.send((id, sha256_hex.to_string()));
    }

    /// Waits until every pack handed over was sent; the ones the server
    /// could not be told.
    pub(super) async fn finish(self) -> Vec<PackId> {
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

/// One `ConfirmDownloads` call for `batch`; the packs it did not confirm.
async fn send(exchange: &ExchangeClient<Authed>, batch: Vec<(PackId, String)>) -> Vec<PackId> {
    let mut untold = Vec::new();
    let mut packs = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    for (id, hex_sha) in batch {
        match hex::decode(&hex_sha) {
            Ok(sha) => {
                packs.push(v1::ConfirmDownloadRequest {
                    pack_id: id.to_string(),
                    ciphertext_sha256: sha,
                });
                ids.push(id);
            }
            Err(_) => untold.push(id),
        }
    }
    if packs.is_empty() {
        return untold;
    }
    let request = v1::ConfirmDownloadsRequest {
        packs: packs.clone(),
    };
    match exchange.clone().confirm_downloads(request).await {
        Ok(answer) => {
            let outcomes = answer.into_inner().outcomes;
            if outcomes.len() != ids.len() {
                untold.extend(ids);
                return untold;
            }
            untold.extend(
                ids.into_iter()
                    .zip(outcomes)
                    .filter(|(_, o)| o.code != tonic::Code::Ok as i32)
                    .map(|(id, _)| id),
            );
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            for (id, one) in ids.into_iter().zip(packs) {
                if exchange.clone().confirm_download(one).await.is_err() {
                    untold.push(id);
                }
            }
        }
        Err(_) => untold.extend(ids),
    }
    untold
}

#[cfg(all(test, feature = "server"))]
mod tests {
    //! Against a server from before `ConfirmDownloads` (a fake one: the
    //! test is about what an older server answers).

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::commands::pull::older::{Older, serve};

    #[tokio::test]
    async fn an_older_server_is_told_one_pack_at_a_time_and_refusals_are_kept() {
        let (a, b, refused) = (PackId::new(), PackId::new(), PackId::new());
        let told = Arc::new(Mutex::new(Vec::new()));
        let server = Older {
            told: told.clone(),
            refused: refused.to_string(),
            ..Older::default()
        };
        let confirmer = Confirmer::start(serve(server).await);
        let sha = "00".repeat(32);
        confirmer.tell(a, &sha);
        confirmer.tell(refused, &sha);
        confirmer.tell(b, &sha);
        // A hash that is not hex is never sent, and is reported untold.
        let garbled = PackId::new();
        confirmer.tell(garbled, "not hex");
        let mut untold: Vec<String> = confirmer
            .finish()
            .await
            .iter()
            .map(|id| id.to_string())
            .collect();
        untold.sort();
        let mut expected = vec![refused.to_string(), garbled.to_string()];
        expected.sort();
        assert_eq!(untold, expected);
        let mut told = told.lock().unwrap().clone();
        told.sort();
        let mut expected = vec![a.to_string(), b.to_string()];
        expected.sort();
        assert_eq!(told, expected);
    }
}
