//! `Download` and `DownloadMany`: serving a pack's header and ciphertext to
//! its destination school, the one key holder a kind is for. Neither
//! changes a pack's state (`ConfirmDownloads` does, once the client wrote
//! it). `DownloadMany` serves small packs (one chunk) many to a call: one
//! authentication, one read a few packs, and one HTTP/2 stream for them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::api::v1;
use baton::api::v1::download_response::Part as DownPart;
use baton::pack::PackId;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::{BoxStream, parse_pack_id, recall, store_status, visible, withdrawn};
use crate::app::App;
use crate::auth::{self, KeyHolder};
use crate::limits::Stream as LongCall;
use crate::store::{ForDownload, Store, StoredPack};

/// Most pack ids one `DownloadMany` call may name.
pub const MANY_MAX: usize = 64;

/// How often a pack streaming in several chunks has its row read again
/// (and after its last chunk): a recall or purge meanwhile cuts the
/// download off within about this long.
const RECHECK: Duration = Duration::from_millis(250);

/// Packs read from the store at once within a `DownloadMany` call. A call
/// holds at most this many small packs (of at most a chunk, 256 KiB,
/// each; an id asked for twice shares its read), one message waiting in
/// the channel and one being sent.
const READ_AT_ONCE: usize = 4;

/// The caller as the directory cache last saw it, and the pack read with
/// the directory's version (a small pack's one chunk too) in one query
/// ([`Packs::pack_for_download`](crate::store::Packs::pack_for_download)):
/// if the directory moved since, the caller is authenticated afresh (a token
/// revoked meanwhile is refused). A caller the cache does not vouch for is
/// authenticated before anything is read.
async fn reader_and_pack<S: Store>(
    app: &App<S>,
    request: &Request<v1::DownloadRequest>,
    id: PackId,
) -> Result<(KeyHolder, Option<ForDownload>), Status> {
    let last_seen = auth::key_holder_as_last_seen(app, request).await?;
    let fresh = match last_seen {
        Some(_) => None,
        None => Some(auth::key_holder(app, request).await?.0),
    };
    let read = app
        .store
        .pack_for_download(id)
        .await
        .map_err(store_status)?;
    let holder = match (fresh, last_seen, &read) {
        (Some(holder), _, _) => holder,
        (None, Some((holder, seen)), Some(read)) if read.directory_version == seen => holder,
        _ => auth::key_holder(app, request).await?.0,
    };
    Ok((holder, read))
}

/// `Download`: the header, then the ciphertext a chunk a message.
pub(super) async fn download<S: Store>(
    app: &Arc<App<S>>,
    request: Request<v1::DownloadRequest>,
) -> Result<Response<BoxStream<v1::DownloadResponse>>, Status> {
    let id = parse_pack_id("pack_id", &request.get_ref().pack_id)?;
    let (holder, read) = reader_and_pack(app, &request, id).await?;
    let (pack, first_chunk) = match read {
        Some(read) => (Some(read.pack), read.chunk),
        None => (None, None),
    };
    let (pack, header) = visible(&holder, id, pack)?;
    if let Some(why) = recall::gone(&pack, id) {
        return Err(Status::not_found(why));
    }
    let permit = app.streams.acquire(holder.school, LongCall::Download)?;
    // A small pack read whole with its row: its two messages, no task.
    // The permit is held until the stream is done with.
    if pack.chunks == 1
        && let Some(data) = first_chunk
    {
        let parts = [DownPart::Header(header), DownPart::Chunk(data.into())];
        let stream = tokio_stream::iter(parts).map(move |part| {
            let _held = &permit;
            Ok(v1::DownloadResponse { part: Some(part) })
        });
        return Ok(Response::new(Box::pin(stream)));
    }
    // One chunk waits in the channel while the next is read: a stalled
    // reader holds about two chunks, not the whole pack.
    let (tx, rx) = mpsc::channel(1);
    let app = Arc::clone(app);
    // The state moves to `downloaded` only when the client confirms it
    // wrote the pack (`ConfirmDownload`): a stream cut short, or a pack
    // that failed to verify, leaves it pending.
    tokio::spawn(async move {
        let _permit = permit;
        let first = v1::DownloadResponse {
            part: Some(DownPart::Header(header)),
        };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        let mut checked = Instant::now();
        for idx in 0..pack.chunks {
            let read = app.store.chunk(&pack.upload_id, idx).await;
            // A pack of several chunks may be a ciphertext file, erased
            // and removed only after its row records the deletion: the
            // row is read again every `RECHECK` while it streams, and
            // always after its last chunk is read, so a pack recalled or
            // purged meanwhile is cut off, and never ends whole. A failed
            // read, or a single chunk (a row, deleted with the pack's),
            // is checked once it fails.
            let last = idx + 1 == pack.chunks;
            let gone =
                if read.is_err() || (pack.chunks > 1 && (last || checked.elapsed() >= RECHECK)) {
                    checked = Instant::now();
                    withdrawn(&app, id).await
                } else {
                    None
                };
            let item = match (read, gone) {
                // Recalled or purged while it streamed: say so.
                (_, Some(status)) => Err(status),
                (Ok(data), None) => Ok(v1::DownloadResponse {
                    part: Some(DownPart::Chunk(data.into())),
                }),
                (Err(e), None) => Err(store_status(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// `DownloadMany`: one message a requested id, in the request's order.
pub(super) async fn download_many<S: Store>(
    app: &Arc<App<S>>,
    request: Request<v1::DownloadManyRequest>,
) -> Result<Response<BoxStream<v1::DownloadManyResponse>>, Status> {
    let (holder, mut seen) = auth::key_holder(app, &request)
        .await
        .map(|(holder, view)| (holder, view.version()))?;
    let asked = &request.get_ref().pack_ids;
    if asked.len() > MANY_MAX {
        return Err(Status::invalid_argument(format!(
            "field `pack_ids`: {} ids, at most {MANY_MAX} a call",
            asked.len()
        )));
    }
    let permit = app.streams.acquire(holder.school, LongCall::Download)?;
    // The call's metadata and connection, kept to authenticate it again.
    let (metadata, extensions, message) = request.into_parts();
    let caller = Request::from_parts(metadata, extensions, ());
    let ids: Vec<(String, Result<PackId, Status>)> = message
        .pack_ids
        .into_iter()
        .map(|text| {
            let id = parse_pack_id("pack_ids", &text);
            (text, id)
        })
        .collect();
    // One message waits in the channel while the next few packs are read.
    let (tx, rx) = mpsc::channel(1);
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let _permit = permit;
        let mut holder = holder;
        for group in ids.chunks(READ_AT_ONCE) {
            let wanted: Vec<PackId> = group
                .iter()
                .filter_map(|(_, id)| id.as_ref().ok().copied())
                .collect();
            let read = match app.store.packs_for_download(&wanted).await {
                Ok(read) => read,
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            };
            // The directory moved since the caller was authenticated (or
            // the last read): authenticate again, so a token or key revoked
            // meanwhile is refused from now on.
            if let Some((_, first)) = read.first()
                && first.directory_version != seen
            {
                match auth::key_holder(&app, &caller).await {
                    Ok((again, view)) => {
                        holder = again;
                        seen = view.version();
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
            // Each read once, its chunk shared (an id asked for twice is
            // served twice).
            let read: HashMap<PackId, (StoredPack, Option<bytes::Bytes>)> = read
                .into_iter()
                .map(|(id, r)| (id, (r.pack, r.chunk.map(bytes::Bytes::from))))
                .collect();
            for (text, id) in group {
                let found = id.as_ref().ok().and_then(|id| read.get(id)).cloned();
                let one = match id {
                    Ok(id) => one_of_many(&app, &holder, *id, found).await,
                    Err(status) => Err(status.clone()),
                };
                if tx.send(Ok(answer(text, one))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Pack `id` for `holder`, as `Download` would serve it whole: its header
/// and ciphertext, or why not.
async fn one_of_many<S: Store>(
    app: &App<S>,
    holder: &KeyHolder,
    id: PackId,
    read: Option<(StoredPack, Option<bytes::Bytes>)>,
) -> Result<(v1::PackHeader, bytes::Bytes), Status> {
    let (pack, chunk) = read.unzip();
    let (pack, header) = visible(holder, id, pack)?;
    if let Some(why) = recall::gone(&pack, id) {
        return Err(Status::not_found(why));
    }
    if pack.chunks != 1 {
        return Err(Status::failed_precondition(format!(
            "pack {id} is more than one chunk: download it with `Download`"
        )));
    }
    let data = match chunk.flatten() {
        Some(data) => data,
        // One chunk held in a ciphertext file: read it, and if that fails,
        // say whether the pack was withdrawn meanwhile.
        None => match app.store.chunk(&pack.upload_id, 0).await {
            Ok(data) => data.into(),
            Err(e) => return Err(withdrawn(app, id).await.unwrap_or_else(|| store_status(e))),
        },
    };
    Ok((header, data))
}

/// The message for one requested id.
fn answer(
    text: &str,
    one: Result<(v1::PackHeader, bytes::Bytes), Status>,
) -> v1::DownloadManyResponse {
    match one {
        Ok((header, ciphertext)) => v1::DownloadManyResponse {
            pack_id: text.to_owned(),
            code: Code::Ok as i32,
            message: String::new(),
            header: Some(header),
            ciphertext,
        },
        Err(status) => v1::DownloadManyResponse {
            pack_id: text.to_owned(),
            code: status.code() as i32,
            message: status.message().to_owned(),
            header: None,
            ciphertext: bytes::Bytes::new(),
        },
    }
}
