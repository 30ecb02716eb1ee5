//! A fake server from before `ConfirmDownloads` and `DownloadMany`, for
//! the tests of what `baton pull` does with an older (or a wayward)
//! server: the tests are about what such a server answers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use baton::api::v1;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};
use v1::exchange_client::ExchangeClient;
use v1::exchange_server::{Exchange, ExchangeServer};

use crate::connect::{Authed, Bearer};

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// A server from before `ConfirmDownloads` and `DownloadMany`: it knows
/// `ConfirmDownload` (refusing the pack `refused`) and `Download` (of the
/// packs in `packs`); `DownloadMany` only when `many` holds its answers
/// (whatever the request).
#[derive(Default)]
pub(crate) struct Older {
    /// The packs `ConfirmDownload` recorded.
    pub told: Arc<Mutex<Vec<String>>>,
    /// The pack `ConfirmDownload` refuses.
    pub refused: String,
    /// What `Download` serves: a pack id's header and ciphertext.
    pub packs: HashMap<String, (v1::PackHeader, Vec<u8>)>,
    /// The packs `Download` was asked for.
    pub downloaded: Arc<Mutex<Vec<String>>>,
    /// `DownloadMany`'s answers (a status ends the stream), if it has the
    /// call.
    pub many: Option<Vec<Result<v1::DownloadManyResponse, Status>>>,
    /// Whether `Download` and `DownloadMany`, their answers sent, send
    /// nothing more and never end (a stalled server).
    pub stalls: bool,
    /// Whether `Download` and `DownloadMany` never answer at all.
    pub mute: bool,
    /// `Download` sends the ciphertext in ten pieces, this long apart.
    pub pace: Option<std::time::Duration>,
}

impl Older {
    /// `answers`, then, if this server stalls, nothing ever again.
    fn then_stall<T: Send + 'static>(
        &self,
        answers: impl tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> Stream<T> {
        use tokio_stream::StreamExt as _;
        if self.stalls {
            Box::pin(answers.chain(tokio_stream::pending()))
        } else {
            Box::pin(answers)
        }
    }
}

/// The answer to a call this server does not have.
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
        request: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        use v1::download_response::Part;
        if self.mute {
            std::future::pending::<()>().await;
        }
        let id = request.into_inner().pack_id;
        if let Ok(mut asked) = self.downloaded.lock() {
            asked.push(id.clone());
        }
        let (header, data) = self
            .packs
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found("no such pack"))?;
        if let Some(pace) = self.pace {
            use futures::StreamExt as _;
            let pieces = data
                .chunks(data.len().div_ceil(10))
                .map(|c| Part::Chunk(c.to_vec().into()));
            let parts: Vec<_> = std::iter::once(Part::Header(header))
                .chain(pieces)
                .collect();
            let paced = futures::stream::iter(parts).then(move |part| async move {
                tokio::time::sleep(pace).await;
                Ok(v1::DownloadResponse { part: Some(part) })
            });
            return Ok(Response::new(self.then_stall(paced)));
        }
        let parts = [Part::Header(header), Part::Chunk(data.into())]
            .map(|part| Ok(v1::DownloadResponse { part: Some(part) }));
        Ok(Response::new(self.then_stall(tokio_stream::iter(parts))))
    }
    type DownloadManyStream = Stream<v1::DownloadManyResponse>;
    async fn download_many(
        &self,
        _: Request<v1::DownloadManyRequest>,
    ) -> Result<Response<Self::DownloadManyStream>, Status> {
        if self.mute {
            std::future::pending::<()>().await;
        }
        let answers = self
            .many
            .clone()
            .ok_or_else(|| Status::unimplemented("not in this version"))?;
        Ok(Response::new(self.then_stall(tokio_stream::iter(answers))))
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

/// Serves `server` on a port of this machine and returns a client of it.
pub(crate) async fn serve(server: Older) -> ExchangeClient<Authed> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(ExchangeServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let bearer = Bearer("Bearer test".parse().unwrap());
    ExchangeClient::new(InterceptedService::new(channel, bearer))
}
