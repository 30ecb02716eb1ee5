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

    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::{Channel, Server};
    use tonic::{Request, Response, Status, Streaming};
    use v1::exchange_server::{Exchange, ExchangeServer};

    use super::*;
    use crate::connect::Bearer;

    type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

    /// Knows only `ConfirmDownload`; refuses the pack `refused`.
    struct Older {
        told: Arc<Mutex<Vec<String>>>,
        refused: String,
    }

    fn older<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("not in this version"))
    }

    #[tonic::async_trait]
    impl Exchange for Older {
        type DownloadStream = Stream<v1::DownloadResponse>;
        type WatchStream = Stream<v1::WatchEvent>;

        async fn confirm_download(
            &self,
            request: Request<v1::ConfirmDownloadRequest>,
        ) -> Result<Response<v1::ConfirmDownloadResponse>, Status> {
            let pack = request.into_inner();
            if pack.pack_id == self.refused {
                return Err(Status::not_found("no such pack"));
            }
            if let Ok(mut told) = self.told.lock() {
                told.push(pack.pack_id);
            }
            Ok(Response::new(v1::ConfirmDownloadResponse::default()))
        }

        async fn confirm_downloads(
            &self,
            _: Request<v1::ConfirmDownloadsRequest>,
        ) -> Result<Response<v1::ConfirmDownloadsResponse>, Status> {
            older()
        }
        async fn upload(
            &self,
            _: Request<Streaming<v1::UploadRequest>>,
        ) -> Result<Response<v1::UploadResponse>, Status> {
            older()
        }
        async fn inbox(
            &self,
            _: Request<v1::InboxRequest>,
        ) -> Result<Response<v1::InboxResponse>, Status> {
            older()
        }
        async fn download(
            &self,
            _: Request<v1::DownloadRequest>,
        ) -> Result<Response<Self::DownloadStream>, Status> {
            older()
        }
        async fn acknowledge(
            &self,
            _: Request<v1::AcknowledgeRequest>,
        ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
            older()
        }
        async fn acknowledge_many(
            &self,
            _: Request<v1::AcknowledgeManyRequest>,
        ) -> Result<Response<v1::AcknowledgeManyResponse>, Status> {
            older()
        }
        async fn sent(
            &self,
            _: Request<v1::SentRequest>,
        ) -> Result<Response<v1::SentResponse>, Status> {
            older()
        }
        async fn recall(
            &self,
            _: Request<v1::RecallRequest>,
        ) -> Result<Response<v1::RecallResponse>, Status> {
            older()
        }
        async fn watch(
            &self,
            _: Request<v1::WatchRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            older()
        }
        async fn limits(
            &self,
            _: Request<v1::LimitsRequest>,
        ) -> Result<Response<v1::LimitsResponse>, Status> {
            older()
        }
    }

    #[tokio::test]
    async fn an_older_server_is_told_one_pack_at_a_time_and_refusals_are_kept() {
        let (a, b, refused) = (PackId::new(), PackId::new(), PackId::new());
        let told = Arc::new(Mutex::new(Vec::new()));
        let server = Older {
            told: told.clone(),
            refused: refused.to_string(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            Server::builder()
                .add_service(ExchangeServer::new(server))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let bearer = Bearer("Bearer test".parse().unwrap());
        let confirmer = Confirmer::start(ExchangeClient::new(InterceptedService::new(
            channel, bearer,
        )));
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
