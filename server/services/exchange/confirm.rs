//! `Exchange.ConfirmDownload` and `Exchange.ConfirmDownloads`: recording
//! that a school verified and wrote a pack it downloaded. The busy path is
//! one conditional write a pack through the store's write queue, with the
//! caller as the directory cache last saw it; when that does not apply (the
//! directory moved, the pack is not pending, not the caller's, …) the
//! caller is authenticated afresh and the pack read and answered as it
//! always was. Many confirmations in one call reach the write queue
//! together, so it commits them in one transaction, and each is answered
//! on its own.

use baton::api::v1;
use baton::pack::{Kind, PackId};
use futures_util::StreamExt as _;
use tonic::{Request, Response, Status};

use super::{inbox_pack, parse_pack_id, recall};
use crate::app::App;
use crate::audit::Event;
use crate::auth::{self, KeyHolder};
use crate::services::wire::store_status;
use crate::store::{Store, now_ms};

/// The most confirmations one `ConfirmDownloads` call may carry.
pub const MAX_CONFIRMATIONS: usize = 500;
/// Confirmations of one call read and answered at once when the busy path
/// did not settle them.
const AT_ONCE: usize = 16;

/// One confirmation as asked: the pack (or why its id is not one) and the
/// hash of the ciphertext the caller read.
type Asked = (Result<PackId, Status>, Vec<u8>);

/// An answer so far: `None` until settled; then when the pack was first
/// recorded as downloaded, or why not.
type Answer = Option<Result<i64, Status>>;

/// `Exchange.ConfirmDownload`.
pub(super) async fn confirm_download<S: Store>(
    app: &App<S>,
    request: Request<v1::ConfirmDownloadRequest>,
) -> Result<Response<v1::ConfirmDownloadResponse>, Status> {
    let req = request.get_ref();
    let asked = [(
        Ok(parse_pack_id("pack_id", &req.pack_id)?),
        req.ciphertext_sha256.clone(),
    )];
    let answer = confirm_each(app, &request, &asked)
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(Status::internal("no answer")));
    Ok(Response::new(v1::ConfirmDownloadResponse {
        downloaded_at_ms: answer?,
    }))
}

/// `Exchange.ConfirmDownloads`: every confirmation as `ConfirmDownload`
/// would treat it; one outcome each, in order.
pub(super) async fn confirm_downloads<S: Store>(
    app: &App<S>,
    request: Request<v1::ConfirmDownloadsRequest>,
) -> Result<Response<v1::ConfirmDownloadsResponse>, Status> {
    let packs = &request.get_ref().packs;
    if packs.len() > MAX_CONFIRMATIONS {
        return Err(Status::invalid_argument(format!(
            "field `packs`: {} confirmations; at most {MAX_CONFIRMATIONS} a call",
            packs.len()
        )));
    }
    let asked: Vec<Asked> = packs
        .iter()
        .map(|p| {
            (
                parse_pack_id("pack_id", &p.pack_id),
                p.ciphertext_sha256.clone(),
            )
        })
        .collect();
    let answers = confirm_each(app, &request, &asked).await?;
    let outcomes = packs
        .iter()
        .zip(answers)
        .map(|(p, answer)| match answer {
            Ok(at) => v1::ConfirmDownloadOutcome {
                pack_id: p.pack_id.clone(),
                code: tonic::Code::Ok as i32,
                message: String::new(),
                downloaded_at_ms: at,
            },
            Err(status) => v1::ConfirmDownloadOutcome {
                pack_id: p.pack_id.clone(),
                code: status.code() as i32,
                message: status.message().to_string(),
                downloaded_at_ms: 0,
            },
        })
        .collect();
    Ok(Response::new(v1::ConfirmDownloadsResponse { outcomes }))
}

/// Confirms each of `asked` for the caller of `request`; one answer each,
/// in order. Only a caller who cannot be authenticated fails the whole.
async fn confirm_each<S: Store, T>(
    app: &App<S>,
    request: &Request<T>,
    asked: &[Asked],
) -> Result<Vec<Result<i64, Status>>, Status> {
    let now = now_ms();
    let mut answers: Vec<Answer> = asked
        .iter()
        .map(|(id, _)| id.as_ref().err().map(|e| Err(e.clone())))
        .collect();
    // The busy path: the caller as the cache last saw it, each write
    // standing only if the directory is still at that version.
    let mut tried_at = None;
    let mut written = 0;
    if let Some((holder, seen)) = auth::key_holder_as_last_seen(app, request).await? {
        written = settle(app, &holder, asked, &mut answers, Some(seen), now).await;
        tried_at = Some(seen);
    }
    // Only a write at the version the cache saw vouches for the caller: a
    // call that wrote nothing (no packs, only malformed ids, none pending)
    // is authenticated afresh like any other.
    if written == 0 || answers.iter().any(Option::is_none) {
        let (holder, directory) = auth::key_holder(app, request).await?;
        // Tried already at the directory as it still is: the packs' state,
        // not the directory, stood in the way; they are read below.
        if tried_at != Some(directory.version()) {
            settle(app, &holder, asked, &mut answers, None, now).await;
        }
        let mut reads = Vec::new();
        for ((id, sha256), answer) in asked.iter().zip(answers.iter_mut()) {
            if let (Ok(id), None) = (id, &answer) {
                let (id, holder) = (*id, &holder);
                reads.push(async move {
                    *answer = Some(read_and_answer(app, holder, id, sha256, now).await);
                });
            }
        }
        futures_util::stream::iter(reads)
            .buffer_unordered(AT_ONCE)
            .collect::<()>()
            .await;
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Status::internal("no answer"))))
        .collect())
}

/// The busy path for every confirmation not yet answered, all at once:
/// [`Packs::confirm_download`](crate::store::Packs::confirm_download) of
/// each by `holder` (at `directory_version`, if given); one that applied
/// is answered `now`, one that did not is left for the next step. How
/// many applied.
async fn settle<S: Store>(
    app: &App<S>,
    holder: &KeyHolder,
    asked: &[Asked],
    answers: &mut [Answer],
    directory_version: Option<i64>,
    now: i64,
) -> usize {
    let mut tries = Vec::new();
    for ((id, sha256), answer) in asked.iter().zip(answers.iter_mut()) {
        let (Ok(id), None) = (id, &answer) else {
            continue;
        };
        let id = *id;
        tries.push(async move {
            let written = app
                .store
                .confirm_download(
                    id,
                    &holder.school,
                    sha256,
                    holder.may_see(Kind::Safeguarding),
                    directory_version,
                    now,
                    Event::by_school(&holder.school, "pack.download", id),
                )
                .await
                .map_err(store_status);
            match written {
                Ok(true) => {
                    *answer = Some(Ok(now));
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    *answer = Some(Err(e));
                    false
                }
            }
        });
    }
    futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|&applied| applied)
        .count()
}

/// A confirmation the busy path did not record: pack `id` read for
/// `holder` and answered (`NotFound`, a hash that is not the pack's, when
/// it was downloaded already), or marked downloaded if it still may be.
async fn read_and_answer<S: Store>(
    app: &App<S>,
    holder: &KeyHolder,
    id: PackId,
    sha256: &[u8],
    now: i64,
) -> Result<i64, Status> {
    let (pack, _) = inbox_pack(app, holder, id).await?;
    if recall::closed_to_destination(&pack)
        && let Some(why) = recall::gone(&pack, id)
    {
        return Err(Status::not_found(why));
    }
    if pack.ciphertext_sha256.as_slice() != sha256 {
        return Err(Status::invalid_argument(
            "field `ciphertext_sha256`: does not match the stored pack",
        ));
    }
    if let Some(at) = pack.downloaded_at_ms {
        return Ok(at);
    }
    let event = Event::by_school(&holder.school, "pack.download", id);
    app.store
        .mark_downloaded(id, now, event)
        .await
        .map_err(store_status)?;
    Ok(now)
}
