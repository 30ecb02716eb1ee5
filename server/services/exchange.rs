//! `baton.v1.Exchange`: uploading, listing, downloading and acknowledging
//! sealed packs. The server checks who may do what and that the ciphertext
//! matches its signed header; it never opens a pack.
//!
//! Uploading is in [`upload`]. Its status codes: a sender key that is
//! unknown or revoked is `PermissionDenied`; a signature that does not
//! verify is `InvalidArgument` (field `header.signature`).

use std::pin::Pin;
use std::sync::Arc;

use baton::Laestab;
use baton::api::v1;
use baton::api::v1::exchange_server::Exchange;
use baton::keys::{KeyId, SchoolKey};
use baton::pack::PackId;
use prost::Message as _;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::wire::{kind_of, store_status};
use crate::app::App;
use crate::audit::Event;
use crate::auth::{self, KeyHolder};
use crate::cache::View;
use crate::limits::Stream as LongCall;
use crate::store::{PackStatus, Page, Store, StoredPack};

/// The active key `key_id` of `school`, or `PermissionDenied` naming `field`.
async fn active_key<S: Store>(
    directory: &View<'_, S>,
    school: &Laestab,
    key_id: KeyId,
    field: &str,
) -> Result<SchoolKey, Status> {
    directory
        .school(school)
        .await
        .map_err(store_status)?
        .and_then(|s| {
            s.keys
                .iter()
                .find(|k| k.key_id() == key_id && k.is_active())
                .cloned()
        })
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "field `{field}`: {key_id} is not an active key of {school}"
            ))
        })
}

/// `NotFound` saying why, if pack `id` was withdrawn or purged since its
/// download began.
async fn withdrawn<S: Store>(app: &App<S>, id: PackId) -> Option<Status> {
    match app.store.pack(id).await {
        Ok(Some(now)) => recall::gone(&now, id).map(Status::not_found),
        _ => None,
    }
}

/// Pack `id` and its header if it is addressed to the caller's school and
/// is for this key holder to see (a child-protection file only for a DSL
/// key); `NotFound` otherwise, the same answer whether it exists or not.
async fn inbox_pack<S: Store>(
    app: &App<S>,
    holder: &KeyHolder,
    id: PackId,
) -> Result<(StoredPack, v1::PackHeader), Status> {
    let pack = app.store.pack(id).await.map_err(store_status)?;
    visible(holder, id, pack)
}

/// `pack` (pack `id` as read), if it is in `holder`'s inbox and of a kind
/// its key may see, with its header; `NotFound` otherwise.
fn visible(
    holder: &KeyHolder,
    id: PackId,
    pack: Option<StoredPack>,
) -> Result<(StoredPack, v1::PackHeader), Status> {
    let not_found = || Status::not_found(format!("no pack {id} in your inbox"));
    let pack = pack
        .filter(|p| p.to == holder.school)
        .ok_or_else(not_found)?;
    let header = stored_header(&pack)?;
    if !holder.may_see(kind_of(&header)) {
        return Err(not_found());
    }
    Ok((pack, header))
}

pub use crate::store::CHUNK_BYTES;
/// Inbox and sent pages: default and largest size.
const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;

mod confirm;
mod download;
pub mod readdress;
mod recall;
pub(crate) mod receipts;
pub(crate) mod upload;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The exchange service.
pub struct Service<S> {
    app: Arc<App<S>>,
}

impl<S: Store> Service<S> {
    /// The service over shared state.
    pub fn new(app: Arc<App<S>>) -> Self {
        Self { app }
    }
}

fn page_size(asked: u32) -> u32 {
    match asked {
        0 => PAGE_DEFAULT,
        n => n.min(PAGE_MAX),
    }
}

fn page_cursor(token: &str, empty: i64) -> Result<i64, Status> {
    if token.is_empty() {
        return Ok(empty);
    }
    token
        .strip_prefix('p')
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| Status::invalid_argument("field `page_token`: not a token from this server"))
}

/// The token for the page after `page` (the counterpart of [`page_cursor`]),
/// empty on the last page.
fn next_page_token(page: &Page) -> String {
    match (page.more, page.packs.last()) {
        (true, Some(last)) => format!("p{}", last.seq),
        _ => String::new(),
    }
}

fn stored_header(pack: &StoredPack) -> Result<v1::PackHeader, Status> {
    v1::PackHeader::decode(pack.header.as_slice()).map_err(|_| {
        tracing::error!(seq = pack.seq, "stored header does not decode");
        Status::unavailable("storage failure")
    })
}

/// A pack's state as its sender sees it: a withdrawal or a purge says more
/// than how far the destination got.
fn state(p: &StoredPack) -> v1::PackState {
    match p.status {
        PackStatus::Purged => v1::PackState::Purged,
        PackStatus::Readdressed => v1::PackState::Readdressed,
        _ if p.readdressed_as.is_some() => v1::PackState::Readdressed,
        _ if p.superseded_by.is_some() => v1::PackState::Superseded,
        PackStatus::Recalled if p.relay_to.is_some() => v1::PackState::RecallRequested,
        PackStatus::Recalled => v1::PackState::Recalled,
        _ if p.recalled_at_ms.is_some() => v1::PackState::RecallRequested,
        // Its collection by the other trust's school is reported back.
        PackStatus::Pending if p.relay_to.is_some() => v1::PackState::Relayed,
        PackStatus::Pending => v1::PackState::Pending,
        PackStatus::Downloaded => v1::PackState::Downloaded,
        PackStatus::Acknowledged => v1::PackState::Acknowledged,
    }
}

/// A stored recall, for an answer.
fn stored_recall(p: &StoredPack) -> Result<Option<v1::Recall>, Status> {
    p.recall
        .as_deref()
        .map(|bytes| {
            v1::Recall::decode(bytes).map_err(|_| {
                tracing::error!(seq = p.seq, "stored recall does not decode");
                Status::unavailable("storage failure")
            })
        })
        .transpose()
}

fn id_text(id: Option<PackId>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

fn parse_pack_id(field: &'static str, text: &str) -> Result<PackId, Status> {
    text.parse()
        .map_err(|e| Status::invalid_argument(format!("field `{field}`: {e}")))
}

#[tonic::async_trait]
impl<S: Store> Exchange for Service<S> {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        self.upload_stream(request).await
    }

    async fn inbox(
        &self,
        request: Request<v1::InboxRequest>,
    ) -> Result<Response<v1::InboxResponse>, Status> {
        let (holder, _) = auth::key_holder(&self.app, &request).await?;
        let caller = holder.school;
        let req = request.into_inner();
        let limit = page_size(req.page_size);
        let after = page_cursor(&req.page_token, 0)?;
        let event = Event::by_school(&caller, "inbox.list", caller);
        let page = self
            .app
            .store
            .inbox(&caller, after, limit, event)
            .await
            .map_err(store_status)?;
        let next_page_token = next_page_token(&page);
        // Child-protection files are listed to the school's DSL keys only
        // (the page token still follows every row read).
        let clocks = crate::clocks::for_answer(&self.app.store).await?;
        let mut packs = Vec::with_capacity(page.packs.len());
        for p in &page.packs {
            let header = stored_header(p)?;
            if holder.may_see(kind_of(&header)) {
                let listed = match p.status {
                    PackStatus::Pending => v1::PackState::Pending,
                    PackStatus::Downloaded => v1::PackState::Downloaded,
                    _ => v1::PackState::Acknowledged,
                };
                packs.push(v1::InboxEntry {
                    due: clocks
                        .due_of(&header)
                        .map(baton::dates::format_ymd)
                        .unwrap_or_default(),
                    header: Some(header),
                    uploaded_at_ms: p.uploaded_at_ms,
                    state: listed as i32,
                    recall: stored_recall(p)?,
                    superseded_by: id_text(p.superseded_by),
                });
            }
        }
        Ok(Response::new(v1::InboxResponse {
            no_calendar: !clocks.has_default(),
            packs,
            next_page_token,
        }))
    }

    type DownloadStream = BoxStream<v1::DownloadResponse>;

    async fn download(
        &self,
        request: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        download::download(&self.app, request).await
    }

    type DownloadManyStream = BoxStream<v1::DownloadManyResponse>;

    async fn download_many(
        &self,
        request: Request<v1::DownloadManyRequest>,
    ) -> Result<Response<Self::DownloadManyStream>, Status> {
        download::download_many(&self.app, request).await
    }

    async fn confirm_download(
        &self,
        request: Request<v1::ConfirmDownloadRequest>,
    ) -> Result<Response<v1::ConfirmDownloadResponse>, Status> {
        confirm::confirm_download(&self.app, request).await
    }

    async fn confirm_downloads(
        &self,
        request: Request<v1::ConfirmDownloadsRequest>,
    ) -> Result<Response<v1::ConfirmDownloadsResponse>, Status> {
        confirm::confirm_downloads(&self.app, request).await
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let (holder, directory) = auth::key_holder(&self.app, &request).await?;
        let wire = request
            .into_inner()
            .receipt
            .ok_or_else(|| Status::invalid_argument("field `receipt`: missing"))?;
        let at = receipts::acknowledge_one(&self.app, &holder, &directory, &wire).await?;
        Ok(Response::new(v1::AcknowledgeResponse {
            acknowledged_at_ms: at,
            checkpoint: self.app.checkpoint().await,
        }))
    }

    async fn acknowledge_many(
        &self,
        request: Request<v1::AcknowledgeManyRequest>,
    ) -> Result<Response<v1::AcknowledgeManyResponse>, Status> {
        receipts::acknowledge_many(&self.app, request).await
    }

    async fn sent(
        &self,
        request: Request<v1::SentRequest>,
    ) -> Result<Response<v1::SentResponse>, Status> {
        let caller = auth::caller(&self.app, &request).await?;
        let req = request.into_inner();
        let limit = page_size(req.page_size);
        let before = page_cursor(&req.page_token, i64::MAX)?;
        let event = Event::by_school(&caller, "sent.list", caller);
        let page = self
            .app
            .store
            .sent(&caller, before, limit, event)
            .await
            .map_err(store_status)?;
        let next_page_token = next_page_token(&page);
        let clocks = crate::clocks::for_answer(&self.app.store).await?;
        let mut packs = Vec::with_capacity(page.packs.len());
        for p in &page.packs {
            let receipt = match &p.receipt {
                Some(bytes) => Some(v1::Receipt::decode(bytes.as_slice()).map_err(|_| {
                    tracing::error!(seq = p.seq, "stored receipt does not decode");
                    Status::unavailable("storage failure")
                })?),
                None => None,
            };
            let header = stored_header(p)?;
            let (readdressed_to, forwarding, forwarding_receipt) =
                readdress::forwarding_of(&self.app, p).await?;
            packs.push(v1::SentEntry {
                due: clocks
                    .due_of(&header)
                    .map(baton::dates::format_ymd)
                    .unwrap_or_default(),
                header: Some(header),
                state: state(p) as i32,
                uploaded_at_ms: p.uploaded_at_ms,
                downloaded_at_ms: p.downloaded_at_ms.unwrap_or(0),
                receipt,
                recall: stored_recall(p)?,
                superseded_by: id_text(p.superseded_by),
                deleted_at_ms: p.deleted_at_ms.unwrap_or(0),
                purge_reason: p.purge_reason.clone().unwrap_or_default(),
                readdressed_to,
                forwarding,
                forwarding_receipt,
            });
        }
        Ok(Response::new(v1::SentResponse {
            no_calendar: !clocks.has_default(),
            packs,
            next_page_token,
        }))
    }

    async fn recall(
        &self,
        request: Request<v1::RecallRequest>,
    ) -> Result<Response<v1::RecallResponse>, Status> {
        self.recall_pack(request).await
    }

    async fn limits(
        &self,
        request: Request<v1::LimitsRequest>,
    ) -> Result<Response<v1::LimitsResponse>, Status> {
        auth::caller(&self.app, &request).await?;
        Ok(Response::new(v1::LimitsResponse {
            max_pack_bytes: self.app.max_pack_bytes,
        }))
    }

    type WatchStream = BoxStream<v1::WatchEvent>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (holder, _) = auth::key_holder(&self.app, &request).await?;
        let caller = holder.school;
        let token_hash = auth::bearer(&request)?;
        let permit = self.app.streams.acquire(caller, LongCall::Watch)?;
        let mut events = self.app.store.subscribe();
        let shutdown = self.app.shutdown.clone();
        let app = Arc::clone(&self.app);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _permit = permit;
            // A token revoked (with its key) while the stream is open ends
            // the stream when the node next sees the directory move.
            let mut directory = app.directory_changes.subscribe();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tx.closed() => break,
                    Ok(()) = directory.changed() => {
                        // A storage hiccup is not a revocation: keep the
                        // stream, check again at the next change.
                        if let Err(status) = auth::still_valid(&app, token_hash).await
                            && status.code() == tonic::Code::Unauthenticated
                        {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    }
                    next = events.recv() => match next {
                        Ok(new) if new.to == caller => {
                            let Ok(header) = v1::PackHeader::decode(new.header.as_slice()) else {
                                tracing::error!("stored header of a new pack does not decode");
                                continue;
                            };
                            if !holder.may_see(kind_of(&header)) {
                                continue;
                            }
                            let event = v1::WatchEvent {
                                header: Some(header),
                                uploaded_at_ms: new.uploaded_at_ms,
                            };
                            if tx.send(Ok(event)).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "a watcher fell behind; it should list its inbox");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
