//! `Exchange.Upload`: checking a pack's header against the caller and the
//! directory, receiving and staging its chunks, and committing it through
//! the store's group committer (checked again if the directory moved on
//! meanwhile).

use std::time::{Duration, Instant};

use baton::Laestab;
use baton::api::v1;
use baton::api::v1::upload_request::Part as UpPart;
use baton::keys::Role;
use baton::pack::recipients_for;
use baton::pack::{Kind, SignedHeader};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};

use super::{CHUNK_BYTES, Service, active_key};
use crate::app::App;
use crate::audit::Event;
use crate::auth;
use crate::cache::View;
use crate::limits::Stream as LongCall;
use crate::services::wire::{store_status, wire_status};
use crate::store::{Committed, PeerLink, Route, Store, now_ms};

/// How many times an upload is checked again when the directory changes
/// under it before it gives up (each change is an enrolment or a revocation).
const MAX_RECHECKS: usize = 4;

/// One message of a pack's stream: `Exchange.Upload`'s from a school, or
/// `Federation.Relay`'s from a peer daemon.
pub(crate) enum Part {
    /// The signed header (boxed: it comes once, the chunks many times).
    Header(Box<v1::PackHeader>),
    /// The next piece of ciphertext (a slice of the message as decoded).
    Chunk(bytes::Bytes),
    /// A message with neither.
    Empty,
}

/// A stream of a pack's messages, header first.
pub(crate) trait PackStream: Send {
    /// The next message; `None` at the end.
    fn next_part(&mut self) -> impl Future<Output = Result<Option<Part>, Status>> + Send;
}

impl PackStream for Streaming<v1::UploadRequest> {
    async fn next_part(&mut self) -> Result<Option<Part>, Status> {
        Ok(self.message().await?.map(|m| match m.part {
            Some(UpPart::Header(h)) => Part::Header(Box::new(h)),
            Some(UpPart::Chunk(c)) => Part::Chunk(c),
            None => Part::Empty,
        }))
    }
}

impl PackStream for Streaming<v1::RelayMessage> {
    async fn next_part(&mut self) -> Result<Option<Part>, Status> {
        use v1::relay_message::Part as RelayPart;
        Ok(self.message().await?.map(|m| match m.part {
            Some(RelayPart::Header(h)) => Part::Header(Box::new(h)),
            Some(RelayPart::Chunk(c)) => Part::Chunk(c),
            None => Part::Empty,
        }))
    }
}

/// The next message of a pack stream, or `DeadlineExceeded` when the
/// sender sends nothing for `idle`: a stalled or slowloris upload must not
/// hold a task, a connection and staged chunks for ever.
pub(crate) async fn next_message(
    stream: &mut impl PackStream,
    idle: Duration,
    too_slow_at: Option<Instant>,
) -> Result<Option<Part>, Status> {
    let wait = too_slow_at.map_or(idle, |at| {
        idle.min(at.saturating_duration_since(Instant::now()))
    });
    match tokio::time::timeout(wait, stream.next_part()).await {
        Ok(message) => message,
        Err(_) if too_slow_at.is_some_and(|at| Instant::now() >= at) => {
            Err(Status::deadline_exceeded(
                "upload too slow: below the server's minimum rate; send again on a better connection",
            ))
        }
        Err(_) => Err(Status::deadline_exceeded(format!(
            "upload stream idle for more than {} s; send again",
            idle.as_secs()
        ))),
    }
}

/// When an upload that has received `total` bytes since `started` falls
/// below `min_rate` bytes a second, after a first `grace` (the idle
/// timeout) in which it need not keep any rate.
fn too_slow_at(started: Instant, grace: Duration, total: u64, min_rate: u64) -> Instant {
    let secs = total / min_rate.max(1);
    started + grace + Duration::from_secs(secs)
}

/// Removes an upload's staged chunks if it does not finish.
pub(crate) async fn discard<S: Store>(store: &S, upload_id: &str) {
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
        former: &[Laestab],
        wire: &v1::PackHeader,
    ) -> Result<(SignedHeader, Vec<u8>), Status> {
        let signed = SignedHeader::try_from(wire).map_err(wire_status)?;
        let h = signed.header();
        // A school renumbered may still sign as its former number until its
        // devices learn the new one.
        if h.from != *caller && !former.contains(&h.from) {
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
        if h.kind == Kind::Safeguarding && !key.roles.contains(&Role::Dsl) {
            return Err(Status::permission_denied(
                "a child-protection file is sent by the school's DSL: the key that signed this one does not hold the dsl role",
            ));
        }
        if !app.endorsed(caller, &key) {
            return Err(Status::failed_precondition(format!(
                "key {} is not yet approved by the trust's operator (`batond admin key approve`): schools accept nothing it signs until then",
                key.key_id()
            )));
        }
        app.signatures
            .check(signed, &key.public)
            .await
            .map_err(|e| Status::invalid_argument(format!("field `header.signature`: {e}")))?;
        if let Some(old) = h.supersedes {
            Self::check_supersedes(app, caller, signed, old).await?;
        }
        super::readdress::check_forwarding(app, caller, signed).await?;
        let quota = app.school_quota_bytes;
        let read = app.store.outstanding_bytes(caller);
        if let Err(waiting) = app
            .school_waiting
            .admit(caller, h.ciphertext_len, quota, read)
            .await
            .map_err(store_status)?
        {
            // A retry of a pack already stored is still answered as such.
            if let Some(existing) = app.store.pack(h.pack_id).await.map_err(store_status)?
                && existing.header == header_bytes
            {
                return Ok(Some(existing.uploaded_at_ms));
            }
            return Err(Status::resource_exhausted(format!(
                "{caller} already has {waiting} bytes waiting on the server for its destinations to collect, and its quota is {} bytes: send again once they have collected and acknowledged earlier packs",
                app.school_quota_bytes
            )));
        }
        let recipients = Self::check_recipients(app, directory, signed).await;
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

    /// A correction names a pack its school sent to the same destination,
    /// of the same kind, that no other pack corrects already. (That it is
    /// the same pupil only the sender can check: the server never knew.)
    async fn check_supersedes(
        app: &App<S>,
        caller: &Laestab,
        signed: &SignedHeader,
        old: baton::pack::PackId,
    ) -> Result<(), Status> {
        let h = signed.header();
        // Stored packs carry both schools' current numbers, whatever former
        // number a header names.
        let to_now = Self::route(app, caller, &h.to).await?.to;
        let original = app
            .store
            .pack(old)
            .await
            .map_err(store_status)?
            .filter(|p| p.from == *caller)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "field `header.supersedes`: your school sent no pack {old}"
                ))
            })?;
        if original.to != to_now {
            return Err(Status::invalid_argument(format!(
                "field `header.supersedes`: pack {old} went to {}, not {}: a correction goes to the same school",
                original.to, h.to
            )));
        }
        let kind = super::stored_header(&original).map(|w| super::kind_of(&w))?;
        if kind != h.kind {
            return Err(Status::invalid_argument(format!(
                "field `header.supersedes`: pack {old} is a {kind} pack, this one a {}",
                h.kind
            )));
        }
        if let Some(by) = original.readdressed_as {
            return Err(Status::failed_precondition(format!(
                "pack {old} was re-addressed by the trust's escrow as pack {by}: send the corrected pack to the school it went to, as a new pack"
            )));
        }
        if let Some(by) = original.superseded_by
            && by != h.pack_id
        {
            return Err(Status::failed_precondition(format!(
                "pack {old} is already superseded by pack {by}: correct that one instead"
            )));
        }
        Ok(())
    }

    /// Withdraws the pack a stored correction supersedes. A failure here
    /// does not fail the upload (the correction is stored): the daemon's
    /// hourly run finishes it.
    async fn supersede_after_commit(app: &App<S>, signed: &SignedHeader) {
        super::readdress::after_commit(app, signed).await;
        let h = signed.header();
        let Some(old) = h.supersedes else { return };
        match crate::retention::supersede(&app.store, &h.from, h.pack_id, old).await {
            Ok(()) => super::recall::reclaim(&app.store).await,
            Err(e) => {
                tracing::error!(error = %e, pack = %h.pack_id, "could not withdraw the pack a correction supersedes; the hourly run will")
            }
        }
    }

    /// [`Self::admit`] against the directory as it is now (its version read
    /// afresh, the token checked again): after a refusal against the cache
    /// as last seen, or a commit that found the directory had moved.
    /// Returns the version checked against and `admit`'s answer.
    async fn admit_now(
        app: &App<S>,
        token_hash: [u8; 32],
        caller: &Laestab,
        signed: &SignedHeader,
        header_bytes: &[u8],
        before_receiving: bool,
    ) -> Result<(i64, Option<i64>), Status> {
        let directory = app.directory.view(&app.store).await.map_err(store_status)?;
        if auth::holder_for(&directory, token_hash).await?.school != *caller {
            return Err(Status::unauthenticated("unknown or revoked token"));
        }
        let admitted = Self::admit(
            app,
            &directory,
            caller,
            signed,
            header_bytes,
            before_receiving,
        )
        .await?;
        Ok((directory.version(), admitted))
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
            // A school's former number routes to the school (renumbering).
            let route = Self::route(app, caller, &signed.header().to).await?;
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
                    Some(route),
                )
                .await
                .map_err(store_status)?;
            match committed {
                Committed::Stored(at) => {
                    let h = signed.header();
                    // Per pack at debug level: the audit log records every upload,
                    // and a line a pack cost 5 % of the daemon's CPU in a surge.
                    tracing::debug!(pack = %pack_id, from = %h.from, to = %h.to, bytes = h.ciphertext_len, "pack stored");
                    Self::supersede_after_commit(app, signed).await;
                    return Ok((false, at));
                }
                Committed::AlreadyStored(at) => {
                    Self::supersede_after_commit(app, signed).await;
                    return Ok((true, at));
                }
                Committed::Conflict => {
                    return Err(Status::already_exists(format!(
                        "another pack with id {pack_id} is stored"
                    )));
                }
                // The tail is staged now; commit again with none.
                Committed::DirectoryMoved => {
                    let (version, admitted) =
                        Self::admit_now(app, token_hash, caller, signed, header_bytes, false)
                            .await?;
                    if let Some(at) = admitted {
                        // Stored by a retry meanwhile: this upload's staged
                        // bytes are not needed.
                        discard(&app.store, upload_id).await;
                        Self::supersede_after_commit(app, signed).await;
                        return Ok((true, at));
                    }
                    checked_at = version;
                }
            }
        }
        Err(Status::unavailable(
            "the directory kept changing while this pack was stored; send again",
        ))
    }

    /// Where a pack from `caller` addressed to `to` is stored: under both
    /// schools' current numbers, whatever former number (alias) the header
    /// names.
    async fn route(app: &App<S>, caller: &Laestab, to: &Laestab) -> Result<Route, Status> {
        let directory = app.directory.cached_view(&app.store);
        if let Some(school) = directory.school(to).await.map_err(store_status)? {
            return Ok(Route {
                from: *caller,
                to: school.info.laestab,
                peer: None,
            });
        }
        // A peer's school: stored under its current number, queued for
        // relaying to that peer in the same transaction.
        let peer = crate::federation::directory::peer_school(&app.store, to)
            .await
            .map_err(store_status)?;
        Ok(
            match peer.and_then(|s| Some((s.laestab.parse::<Laestab>().ok()?, s.peer))) {
                Some((to_now, peer)) => Route {
                    from: *caller,
                    to: to_now,
                    peer: Some(PeerLink::RelayTo(peer)),
                },
                None => Route {
                    from: *caller,
                    to: *to,
                    peer: None,
                },
            },
        )
    }

    /// Checks the recipient set against the destination's current keys.
    pub(crate) async fn check_recipients(
        app: &App<S>,
        directory: &View<'_, S>,
        signed: &SignedHeader,
    ) -> Result<(), Status> {
        let h = signed.header();
        let expected: Vec<_> = match directory.school(&h.to).await.map_err(store_status)? {
            // With a directory key, only keys it endorsed count.
            Some(dest) => recipients_for(h.kind, &dest.keys)
                .into_iter()
                .filter(|k| app.endorsed(&h.to, k))
                .map(|k| k.key_id())
                .collect(),
            // A peer's school: its keys as its trust lists them (this
            // trust's directory key does not endorse them).
            None => {
                let school = crate::federation::directory::peer_school(&app.store, &h.to)
                    .await
                    .map_err(store_status)?
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "field `header.to`: school {} is not enrolled",
                            h.to
                        ))
                    })?;
                let keys = crate::federation::directory::keys_of(&school);
                recipients_for(h.kind, &keys)
                    .into_iter()
                    .map(|k| k.key_id())
                    .collect()
            }
        };
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

    /// `Exchange.Upload`: the header first, checked, then the chunks, staged
    /// as they come, then the group commit.
    pub(super) async fn upload_stream(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        // Checked against the cache as last seen, without reading the
        // directory version: the commit reads it, and if it has moved the
        // upload is checked again before it is stored.
        let token_hash = auth::bearer(&request)?;
        let directory = self.app.directory.cached_view(&self.app.store);
        let caller = auth::holder_for(&directory, token_hash).await?.school;
        let permit = self.app.streams.acquire(caller, LongCall::Upload)?;
        let mut stream = request.into_inner();
        let wire = match next_message(&mut stream, self.app.upload_idle_timeout, None).await? {
            Some(Part::Header(h)) => *h,
            Some(Part::Chunk(_)) => {
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
        let former = directory
            .school(&caller)
            .await
            .map_err(store_status)?
            .map(|s| s.aliases.clone())
            .unwrap_or_default();
        let (signed, header_bytes) = self.parse_header(&caller, &former, &wire)?;
        let pack_id = signed.header().pack_id;
        let (checked_at, admitted) =
            match Self::admit(&self.app, &directory, &caller, &signed, &header_bytes, true).await {
                Ok(admitted) => (directory.version(), admitted),
                // Refused against the cache as last seen, which may predate
                // a key just added: ask the directory as it is now.
                Err(_) => {
                    Self::admit_now(&self.app, token_hash, &caller, &signed, &header_bytes, true)
                        .await?
                }
            };
        if let Some(at) = admitted {
            Self::supersede_after_commit(&self.app, &signed).await;
            return Ok(Response::new(v1::UploadResponse {
                pack_id: pack_id.to_string(),
                already_stored: true,
                uploaded_at_ms: at,
                checkpoint: self.app.checkpoint().await,
            }));
        }

        // Receive in a task of its own so that a client going away mid-stream
        // still runs the clean-up below.
        let app = self.app.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let upload_id = crate::store::new_upload_id();
            let tail = match receive(&app, &signed, &upload_id, stream).await {
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
            checkpoint: self.app.checkpoint_after_upload().await,
        }))
    }
}

/// Receives the chunks after the header, staging them as they come
/// (`upload_id`'s), checked against the header's length and hash; returns
/// the tail not yet staged.
pub(crate) async fn receive<S: Store>(
    app: &App<S>,
    signed: &SignedHeader,
    upload_id: &str,
    mut stream: impl PackStream,
) -> Result<Vec<(i64, Vec<u8>)>, Status> {
    let h = signed.header();
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut idx: i64 = 0;
    // Allocated only if a message is not exactly a chunk: an upload whose
    // messages are (as `baton send` sends them) holds no buffer of its own.
    let mut buf: Vec<u8> = Vec::new();
    let started = Instant::now();
    while let Some(msg) = next_message(
        &mut stream,
        app.upload_idle_timeout,
        Some(too_slow_at(
            started,
            app.upload_idle_timeout,
            total,
            app.upload_min_bytes_per_sec,
        )),
    )
    .await?
    {
        let data = match msg {
            Part::Chunk(data) => data,
            Part::Header(_) => {
                return Err(Status::invalid_argument("field `part`: header sent twice"));
            }
            Part::Empty => return Err(Status::invalid_argument("field `part`: empty message")),
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
        // A message that is exactly a chunk (as `baton send` sends
        // them) is staged as it is; others fill a buffer of exactly
        // CHUNK_BYTES, handed over when full. An upload holds about one
        // chunk however large the pack is.
        if buf.is_empty() && data.len() == CHUNK_BYTES {
            app.store
                .stage_chunk(upload_id, idx, data)
                .await
                .map_err(store_status)?;
            idx += 1;
            continue;
        }
        let mut rest: &[u8] = &data;
        while !rest.is_empty() {
            if buf.capacity() == 0 {
                let left = h.ciphertext_len.saturating_sub(total - rest.len() as u64);
                buf.reserve_exact(
                    usize::try_from(left).map_or(CHUNK_BYTES, |n| n.min(CHUNK_BYTES)),
                );
            }
            let take = (CHUNK_BYTES - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == CHUNK_BYTES {
                let full = std::mem::take(&mut buf);
                app.store
                    .stage_chunk(upload_id, idx, full.into())
                    .await
                    .map_err(store_status)?;
                idx += 1;
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
