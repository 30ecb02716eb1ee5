//! `baton.v1.Exchange`: uploading, listing, downloading and acknowledging
//! sealed packs. The server checks who may do what and that the ciphertext
//! matches its signed header; it never opens a pack.
//!
//! Upload status codes: a sender key that is unknown or revoked is
//! `PermissionDenied`; a signature that does not verify is
//! `InvalidArgument` (field `header.signature`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use baton::Laestab;
use baton::api::v1;
use baton::api::v1::download_response::Part as DownPart;
use baton::api::v1::exchange_server::Exchange;
use baton::api::v1::upload_request::Part as UpPart;
use baton::keys::{KeyId, SchoolKey, recipients_for};
use baton::pack::{PackId, SignedHeader, SignedReceipt};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{App, store_status, wire_status};
use crate::audit::Event;
use crate::auth;
use crate::cache::View;
use crate::store::{Acknowledged, Committed, PackStatus, Page, Store, StoredPack, now_ms};

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

/// Ciphertext is stored and downloaded in pieces of at most this size. An
/// upload holds one such piece (and the store's copy of it) while staging,
/// so with many uploads at once this sets the daemon's memory.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// How many times an upload is checked again when the directory changes
/// under it before it gives up (each change is an enrolment or a revocation).
const MAX_RECHECKS: usize = 4;
/// Inbox and sent pages: default and largest size.
const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;

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

fn state(status: PackStatus) -> v1::PackState {
    match status {
        PackStatus::Pending => v1::PackState::Pending,
        PackStatus::Downloaded => v1::PackState::Downloaded,
        PackStatus::Acknowledged => v1::PackState::Acknowledged,
    }
}

fn parse_pack_id(field: &'static str, text: &str) -> Result<PackId, Status> {
    text.parse()
        .map_err(|e| Status::invalid_argument(format!("field `{field}`: {e}")))
}

/// The next message of an upload stream, or `DeadlineExceeded` when the
/// client sends nothing for `idle`: a stalled or slowloris upload must not
/// hold a task, a connection and staged chunks for ever.
async fn next_message(
    stream: &mut Streaming<v1::UploadRequest>,
    idle: Duration,
) -> Result<Option<v1::UploadRequest>, Status> {
    tokio::time::timeout(idle, stream.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "upload stream idle for more than {} s; send again",
                idle.as_secs()
            ))
        })?
}

/// Removes an upload's staged chunks if it does not finish.
async fn discard<S: Store>(store: &S, upload_id: &str) {
    if let Err(e) = store.discard_upload(upload_id).await {
        tracing::error!(error = %e, upload_id, "could not discard a failed upload");
    }
}

impl<S: Store> Service<S> {
    /// Parses a header and checks it against the caller and the size limit;
    /// returns the signed header and its canonical protobuf bytes.
    fn parse_header(
        &self,
        caller: &Laestab,
        wire: &v1::PackHeader,
    ) -> Result<(SignedHeader, Vec<u8>), Status> {
        let signed = SignedHeader::try_from(wire).map_err(wire_status)?;
        let h = signed.header();
        if h.from != *caller {
            return Err(Status::permission_denied(format!(
                "field `header.from`: you upload as {caller}, not {}",
                h.from
            )));
        }
        if h.ciphertext_len > self.app.max_pack_bytes {
            return Err(Status::resource_exhausted(format!(
                "pack of {} bytes is larger than this server accepts ({} bytes)",
                h.ciphertext_len, self.app.max_pack_bytes
            )));
        }
        let bytes = v1::PackHeader::from(&signed).encode_to_vec();
        Ok((signed, bytes))
    }

    /// Checks an upload against `directory`: an active key of the caller
    /// signed the header, and it is sealed to the destination's current
    /// keys. `Some(at)` when the same pack is already stored (a retry
    /// succeeds even if the directory moved on). Before the bytes are
    /// received, a pack larger than one chunk is looked up first, so a
    /// retry is answered before it is sent again; a small one is settled
    /// by the commit.
    async fn admit(
        app: &App<S>,
        directory: &View<'_, S>,
        caller: &Laestab,
        signed: &SignedHeader,
        header_bytes: &[u8],
        before_receiving: bool,
    ) -> Result<Option<i64>, Status> {
        let h = signed.header();
        let key = active_key(directory, caller, h.sender_key_id, "header.sender_key_id").await?;
        signed
            .verify(&key.public)
            .map_err(|e| Status::invalid_argument(format!("field `header.signature`: {e}")))?;
        let recipients = Self::check_recipients(directory, signed).await;
        let large = h.ciphertext_len > CHUNK_BYTES as u64;
        if (recipients.is_err() || (before_receiving && large))
            && let Some(existing) = app.store.pack(h.pack_id).await.map_err(store_status)?
        {
            if existing.header == header_bytes {
                return Ok(Some(existing.uploaded_at_ms));
            }
            return Err(Status::already_exists(format!(
                "another pack with id {} is stored",
                h.pack_id
            )));
        }
        recipients?;
        Ok(None)
    }

    /// The checks again, against the directory as it is now, after the
    /// commit found it had changed since the upload was checked. `Ok(Err(at))`
    /// when the pack is stored already; `Ok(Ok(version))` to commit again.
    async fn recheck(
        app: &App<S>,
        token_hash: [u8; 32],
        caller: &Laestab,
        signed: &SignedHeader,
        header_bytes: &[u8],
    ) -> Result<Result<i64, i64>, Status> {
        let directory = app.directory.view(&app.store).await.map_err(store_status)?;
        if auth::school_for(&directory, token_hash).await? != *caller {
            return Err(Status::unauthenticated("unknown or revoked token"));
        }
        Ok(
            match Self::admit(app, &directory, caller, signed, header_bytes, false).await? {
                Some(at) => Err(at),
                None => Ok(directory.version()),
            },
        )
    }

    /// Commits a received upload if the directory is still the one it was
    /// checked against, checking it again (up to [`MAX_RECHECKS`] times) if
    /// not. `(already_stored, uploaded_at_ms)`.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        app: &App<S>,
        upload_id: &str,
        token_hash: [u8; 32],
        caller: &Laestab,
        signed: &SignedHeader,
        header_bytes: &[u8],
        mut tail: Vec<(i64, Vec<u8>)>,
        mut checked_at: i64,
    ) -> Result<(bool, i64), Status> {
        let pack_id = signed.header().pack_id;
        for _ in 0..MAX_RECHECKS {
            let event = Event::by_school(caller, "pack.upload", pack_id);
            let committed = app
                .store
                .commit_upload(
                    upload_id,
                    signed,
                    header_bytes,
                    std::mem::take(&mut tail),
                    now_ms(),
                    event,
                    Some(checked_at),
                )
                .await
                .map_err(store_status)?;
            match committed {
                Committed::Stored(at) => {
                    let h = signed.header();
                    tracing::info!(pack = %pack_id, from = %h.from, to = %h.to, bytes = h.ciphertext_len, "pack stored");
                    return Ok((false, at));
                }
                Committed::AlreadyStored(at) => return Ok((true, at)),
                Committed::Conflict => {
                    return Err(Status::already_exists(format!(
                        "another pack with id {pack_id} is stored"
                    )));
                }
                // The tail is staged now; commit again with none.
                Committed::DirectoryMoved => {
                    match Self::recheck(app, token_hash, caller, signed, header_bytes).await? {
                        Ok(version) => checked_at = version,
                        Err(at) => return Ok((true, at)),
                    }
                }
            }
        }
        Err(Status::unavailable(
            "the directory kept changing while this pack was stored; send again",
        ))
    }

    /// Checks the recipient set against the destination's current keys.
    async fn check_recipients(
        directory: &View<'_, S>,
        signed: &SignedHeader,
    ) -> Result<(), Status> {
        let h = signed.header();
        let dest = directory
            .school(&h.to)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "field `header.to`: school {} is not enrolled",
                    h.to
                ))
            })?;
        let expected: Vec<_> = recipients_for(h.kind, &dest.keys)
            .iter()
            .map(|k| k.key_id())
            .collect();
        if expected.is_empty() {
            return Err(Status::failed_precondition(format!(
                "school {} has no active key a {} pack can be sealed to",
                h.to, h.kind
            )));
        }
        if expected != h.recipient_key_ids {
            return Err(Status::failed_precondition(format!(
                "field `header.recipient_key_ids`: not the current keys of school {}; refresh the directory and seal again",
                h.to
            )));
        }
        Ok(())
    }

    /// Receives the chunks after the header, staging them as they come.
    async fn receive(
        app: &App<S>,
        signed: &SignedHeader,
        upload_id: &str,
        mut stream: Streaming<v1::UploadRequest>,
    ) -> Result<Vec<(i64, Vec<u8>)>, Status> {
        let h = signed.header();
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut idx: i64 = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(
            usize::try_from(h.ciphertext_len).map_or(CHUNK_BYTES, |n| n.min(CHUNK_BYTES)),
        );
        while let Some(msg) = next_message(&mut stream, app.upload_idle_timeout).await? {
            let data = match msg.part {
                Some(UpPart::Chunk(data)) => data,
                Some(UpPart::Header(_)) => {
                    return Err(Status::invalid_argument("field `part`: header sent twice"));
                }
                None => return Err(Status::invalid_argument("field `part`: empty message")),
            };
            total = total.saturating_add(data.len() as u64);
            if total > app.max_pack_bytes {
                return Err(Status::resource_exhausted(format!(
                    "pack is larger than this server accepts ({} bytes)",
                    app.max_pack_bytes
                )));
            }
            if total > h.ciphertext_len {
                return Err(Status::invalid_argument(format!(
                    "field `header.ciphertext_length`: more than {} bytes received",
                    h.ciphertext_len
                )));
            }
            hasher.update(&data);
            // Fill one buffer of exactly CHUNK_BYTES and reuse it, so an
            // upload holds at most one chunk however large the pack is.
            let mut rest: &[u8] = &data;
            while !rest.is_empty() {
                let take = (CHUNK_BYTES - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == CHUNK_BYTES {
                    app.store
                        .stage_chunk(upload_id, idx, &buf)
                        .await
                        .map_err(store_status)?;
                    idx += 1;
                    buf.clear();
                }
            }
        }
        if total != h.ciphertext_len {
            return Err(Status::invalid_argument(format!(
                "field `header.ciphertext_length`: header says {} bytes, {total} received",
                h.ciphertext_len
            )));
        }
        if <[u8; 32]>::from(hasher.finalize()) != h.ciphertext_sha256 {
            return Err(Status::invalid_argument(
                "field `header.ciphertext_sha256`: the ciphertext received does not match",
            ));
        }
        Ok(if buf.is_empty() {
            Vec::new()
        } else {
            vec![(idx, buf)]
        })
    }
}

#[tonic::async_trait]
impl<S: Store> Exchange for Service<S> {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        // Checked against the cache as last seen, without reading the
        // directory version: the commit reads it, and if it has moved the
        // upload is checked again before it is stored.
        let token_hash = auth::bearer(&request)?;
        let directory = self.app.directory.cached_view(&self.app.store);
        let caller = auth::school_for(&directory, token_hash).await?;
        let mut stream = request.into_inner();
        let wire = match next_message(&mut stream, self.app.upload_idle_timeout).await? {
            Some(v1::UploadRequest {
                part: Some(UpPart::Header(h)),
            }) => h,
            Some(v1::UploadRequest {
                part: Some(UpPart::Chunk(_)),
            }) => {
                return Err(Status::invalid_argument(
                    "field `part`: a chunk came before the header",
                ));
            }
            _ => {
                return Err(Status::invalid_argument(
                    "field `part`: the header must come first",
                ));
            }
        };
        let (signed, header_bytes) = self.parse_header(&caller, &wire)?;
        let pack_id = signed.header().pack_id;
        if let Some(at) =
            Self::admit(&self.app, &directory, &caller, &signed, &header_bytes, true).await?
        {
            return Ok(Response::new(v1::UploadResponse {
                pack_id: pack_id.to_string(),
                already_stored: true,
                uploaded_at_ms: at,
            }));
        }
        let checked_at = directory.version();

        // Receive in a task of its own so that a client going away mid-stream
        // still runs the clean-up below.
        let app = self.app.clone();
        let task = tokio::spawn(async move {
            let upload_id = hex::encode(rand::random::<[u8; 16]>());
            let tail = match Self::receive(&app, &signed, &upload_id, stream).await {
                Ok(tail) => tail,
                Err(status) => {
                    discard(&app.store, &upload_id).await;
                    return Err(status);
                }
            };
            let outcome = Self::commit(
                &app,
                &upload_id,
                token_hash,
                &caller,
                &signed,
                &header_bytes,
                tail,
                checked_at,
            )
            .await;
            if outcome.is_err() {
                discard(&app.store, &upload_id).await;
            }
            outcome
        });
        let (already_stored, uploaded_at_ms) = task
            .await
            .map_err(|_| Status::internal("upload task failed"))??;
        Ok(Response::new(v1::UploadResponse {
            pack_id: pack_id.to_string(),
            already_stored,
            uploaded_at_ms,
        }))
    }

    async fn inbox(
        &self,
        request: Request<v1::InboxRequest>,
    ) -> Result<Response<v1::InboxResponse>, Status> {
        let caller = auth::caller(&self.app, &request).await?;
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
        let packs = page
            .packs
            .iter()
            .map(|p| {
                Ok(v1::InboxEntry {
                    header: Some(stored_header(p)?),
                    uploaded_at_ms: p.uploaded_at_ms,
                    state: state(p.status) as i32,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(v1::InboxResponse {
            packs,
            next_page_token,
        }))
    }

    type DownloadStream = BoxStream<v1::DownloadResponse>;

    async fn download(
        &self,
        request: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let caller = auth::caller(&self.app, &request).await?;
        let id = parse_pack_id("pack_id", &request.get_ref().pack_id)?;
        let pack = self
            .app
            .store
            .pack(id)
            .await
            .map_err(store_status)?
            .filter(|p| p.to == caller)
            .ok_or_else(|| Status::not_found(format!("no pack {id} in your inbox")))?;
        let header = stored_header(&pack)?;
        let (tx, rx) = mpsc::channel(4);
        let app = self.app.clone();
        tokio::spawn(async move {
            let first = v1::DownloadResponse {
                part: Some(DownPart::Header(header)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            for idx in 0..pack.chunks {
                let item = app
                    .store
                    .chunk(&pack.upload_id, idx)
                    .await
                    .map(|data| v1::DownloadResponse {
                        part: Some(DownPart::Chunk(data)),
                    })
                    .map_err(store_status);
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            let event = Event::by_school(&caller, "pack.download", id);
            if let Err(e) = app.store.mark_downloaded(id, now_ms(), event).await {
                tracing::error!(error = %e, pack = %id, "could not record a download");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let (caller, directory) = auth::authenticate(&self.app, &request).await?;
        let wire = request
            .into_inner()
            .receipt
            .ok_or_else(|| Status::invalid_argument("field `receipt`: missing"))?;
        let signed = SignedReceipt::try_from(&wire).map_err(wire_status)?;
        let r = signed.receipt();
        let store = &self.app.store;
        let pack = store
            .pack(r.pack_id)
            .await
            .map_err(store_status)?
            .filter(|p| p.to == caller)
            .ok_or_else(|| Status::not_found(format!("no pack {} in your inbox", r.pack_id)))?;
        if pack.ciphertext_sha256 != r.ciphertext_sha256 {
            return Err(Status::invalid_argument(
                "field `receipt.ciphertext_sha256`: does not match the stored pack",
            ));
        }
        let key = active_key(
            &directory,
            &caller,
            r.recipient_key_id,
            "receipt.recipient_key_id",
        )
        .await?;
        signed
            .verify(&key.public)
            .map_err(|e| Status::invalid_argument(format!("field `receipt.signature`: {e}")))?;
        let bytes = v1::Receipt::from(&signed).encode_to_vec();
        let event = Event::by_school(&caller, "pack.acknowledge", r.pack_id);
        match store
            .acknowledge(r.pack_id, &bytes, now_ms(), event)
            .await
            .map_err(store_status)?
        {
            Acknowledged::At(at) => Ok(Response::new(v1::AcknowledgeResponse {
                acknowledged_at_ms: at,
            })),
            Acknowledged::Conflict => Err(Status::already_exists(format!(
                "pack {} is already acknowledged with another receipt",
                r.pack_id
            ))),
        }
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
        let packs = page
            .packs
            .iter()
            .map(|p| {
                let receipt = match &p.receipt {
                    Some(bytes) => Some(v1::Receipt::decode(bytes.as_slice()).map_err(|_| {
                        tracing::error!(seq = p.seq, "stored receipt does not decode");
                        Status::unavailable("storage failure")
                    })?),
                    None => None,
                };
                Ok(v1::SentEntry {
                    header: Some(stored_header(p)?),
                    state: state(p.status) as i32,
                    uploaded_at_ms: p.uploaded_at_ms,
                    downloaded_at_ms: p.downloaded_at_ms.unwrap_or(0),
                    receipt,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(v1::SentResponse {
            packs,
            next_page_token,
        }))
    }

    type WatchStream = BoxStream<v1::WatchEvent>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = auth::caller(&self.app, &request).await?;
        let mut events = self.app.store.subscribe();
        let shutdown = self.app.shutdown.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tx.closed() => break,
                    next = events.recv() => match next {
                        Ok(new) if new.to == caller => {
                            let Ok(header) = v1::PackHeader::decode(new.header.as_slice()) else {
                                tracing::error!("stored header of a new pack does not decode");
                                continue;
                            };
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
