//! Store and forward between peers, the receiving trust's side: what
//! `Federation.Relay` and `Federation.ReturnReceipt` check before anything
//! is stored. A relayed pack must come from a school the calling peer
//! serves (or its escrow: see [`super::readdressed`]) (as its directory
//! was last read here), be signed by an active
//! key of that school (a child-protection file by a DSL key), be addressed
//! to a school of this daemon and sealed to exactly that school's current
//! keys; it is stored once by pack id and answered with this daemon's
//! signed relay receipt. A returned receipt must be for a pack this daemon
//! relayed to that same peer, signed by a key of the destination school
//! the pack was sealed to.

use baton::api::v1;
use baton::keys::Role;
use baton::pack::{Kind, SignedHeader, SignedRecall, SignedReceipt};
use prost::Message as _;
use tonic::Status;

use super::directory::{keys_of, peer_school};
use super::sync::Resync;
use crate::app::App;
use crate::audit::Event;
use crate::services::exchange::Service as Exchange;
use crate::services::exchange::upload::{PackStream, Part, discard, next_message, receive};
use crate::services::wire::{store_status, wire_status};
use crate::store::lifecycle::deletion_record;
use crate::store::{Committed, PeerLink, Route, Store, Withdrawal, Withdrawn, now_ms};

/// A relayed correction may withdraw only a pack the same peer relayed
/// here from the same school (`from`, as stored: the sender's current
/// number, or a re-addressed pack's original sender) to the same school, of the same kind, not
/// corrected already by another (a pack not here yet is fine: nothing to
/// withdraw; if it arrives later, the hourly run links the two).
async fn check_correction<S: Store>(
    app: &App<S>,
    peer: &str,
    signed: &SignedHeader,
    from: &baton::Laestab,
    old: baton::pack::PackId,
    to: &baton::Laestab,
) -> Result<(), Status> {
    let h = signed.header();
    let Some(original) = app.store.pack(old).await.map_err(store_status)? else {
        return Ok(());
    };
    let refused = || {
        Status::permission_denied(format!(
            "field `header.supersedes`: pack {old} is not one {peer} relayed here from {from} to {to}"
        ))
    };
    if original.relayed_from.as_deref() != Some(peer)
        || original.from != *from
        || original.to != *to
    {
        return Err(refused());
    }
    let header = v1::PackHeader::decode(original.header.as_slice())
        .map_err(|_| Status::unavailable("storage failure"))?;
    if crate::services::wire::kind_of(&header) != h.kind {
        return Err(refused());
    }
    if let Some(by) = original.superseded_by
        && by != h.pack_id
    {
        return Err(Status::failed_precondition(format!(
            "pack {old} is already superseded by pack {by}"
        )));
    }
    Ok(())
}

/// The active key `key_id` of `from`, a school `peer` serves.
async fn sender_key<S: Store>(
    app: &App<S>,
    peer: &str,
    from: &baton::Laestab,
    key_id: baton::keys::KeyId,
) -> Result<(baton::Laestab, baton::keys::SchoolKey), Status> {
    let sender = peer_school(&app.store, from)
        .await
        .map_err(store_status)?
        .filter(|s| s.peer == peer)
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "field `header.from`: school {from} is not one that {peer} serves"
            ))
        })?;
    let key = keys_of(&sender)
        .into_iter()
        .find(|k| k.key_id() == key_id && k.is_active())
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "field `header.sender_key_id`: not an active key of school {from}"
            ))
        })?;
    // Its current number, whatever former one the header names.
    let number = sender.laestab.parse().unwrap_or(*from);
    Ok((number, key))
}

/// [`sender_key`], after reading `peer`'s directory again if it fails
/// (at most every few seconds: [`Resync`]).
pub(super) async fn sender_key_or_resync<S: Store>(
    app: &App<S>,
    resync: &Resync,
    peer: &str,
    from: &baton::Laestab,
    key_id: baton::keys::KeyId,
) -> Result<(baton::Laestab, baton::keys::SchoolKey), Status> {
    match sender_key(app, peer, from, key_id).await {
        Err(_) if resync.now(&app.store, peer).await => sender_key(app, peer, from, key_id).await,
        found => found,
    }
}

/// Whether `key` was active at `at_ms` (a signed time): not revoked, or
/// revoked later.
pub(super) fn signed_while_active(key: &baton::keys::SchoolKey, at_ms: i64) -> bool {
    key.revoked_at_ms.is_none_or(|revoked| at_ms < revoked)
}

/// Receives, checks and stores a pack `peer` relays; its relay receipt.
pub async fn relay<S: Store>(
    app: &std::sync::Arc<App<S>>,
    peer: &str,
    resync: &Resync,
    quota_bytes: u64,
    mut stream: impl PackStream + 'static,
) -> Result<v1::RelayReceipt, Status> {
    let wire = match next_message(&mut stream, app.upload_idle_timeout, None).await? {
        Some(Part::Header(h)) => *h,
        _ => {
            return Err(Status::invalid_argument(
                "field `part`: the header must come first",
            ));
        }
    };
    let signed = SignedHeader::try_from(&wire).map_err(wire_status)?;
    let header_bytes = v1::PackHeader::from(&signed).encode_to_vec();
    let h = signed.header();
    if h.ciphertext_len > app.max_pack_bytes {
        return Err(Status::resource_exhausted(format!(
            "pack of {} bytes is larger than this daemon accepts ({} bytes)",
            h.ciphertext_len, app.max_pack_bytes
        )));
    }
    // A trust's escrow holds its own schools' packs only.
    if h.to.is_escrow() {
        return Err(Status::failed_precondition(
            "packs to the escrow do not cross between trusts",
        ));
    }
    // The sender: a school this peer serves (for a re-addressed pack, its
    // escrow, and the original's sender one of its schools), and its key
    // (the peer's directory read again first if one is new here). A pack
    // the escrow re-addressed is stored under its original sender.
    let (from_now, key) = match &h.forwarded {
        None => sender_key_or_resync(app, resync, peer, &h.from, h.sender_key_id).await?,
        Some(forwarded) => super::readdressed::check(app, resync, peer, &signed, forwarded).await?,
    };
    if h.kind == Kind::Safeguarding && !key.roles.contains(&Role::Dsl) {
        return Err(Status::permission_denied(
            "a child-protection file is sent by the school's DSL: the key that signed this one does not hold the dsl role",
        ));
    }
    signed
        .verify(&key.public)
        .map_err(|e| Status::invalid_argument(format!("field `header.signature`: {e}")))?;
    // The destination: one of this daemon's schools, sealed to its keys.
    let directory = app.directory.view(&app.store).await.map_err(store_status)?;
    let dest = directory
        .school(&h.to)
        .await
        .map_err(store_status)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "field `header.to`: school {} is not enrolled here",
                h.to
            ))
        })?;
    Exchange::check_recipients(app, &directory, &signed).await?;
    if let Some(old) = h.supersedes {
        check_correction(app, peer, &signed, &from_now, old, &dest.info.laestab).await?;
    }
    let stored_receipt = |stored_at_ms: i64| {
        let statement = super::relay::receipt_statement(
            &h.pack_id.to_string(),
            &h.ciphertext_sha256,
            &h.to.to_string(),
            stored_at_ms,
        );
        v1::RelayReceipt {
            pack_id: h.pack_id.to_string(),
            ciphertext_sha256: h.ciphertext_sha256.to_vec(),
            to: h.to.to_string(),
            stored_at_ms,
            signature: app.notary.sign_statement(&statement).to_vec(),
        }
    };
    if let Some(existing) = app.store.pack(h.pack_id).await.map_err(store_status)? {
        if existing.header == header_bytes {
            return Ok(stored_receipt(existing.uploaded_at_ms));
        }
        return Err(Status::already_exists(format!(
            "another pack with id {} is stored",
            h.pack_id
        )));
    }
    let read = app.store.peer_outstanding_bytes(peer);
    if let Err(waiting) = app
        .peer_waiting
        .admit(&peer.to_string(), h.ciphertext_len, quota_bytes, read)
        .await
        .map_err(store_status)?
    {
        return Err(Status::resource_exhausted(format!(
            "{peer}'s schools already have {waiting} bytes waiting here for this trust's schools to collect, \
             and its quota is {quota_bytes} bytes: relay again once they have acknowledged earlier packs"
        )));
    }
    let upload_id = crate::store::new_upload_id();
    let tail = match receive(app, &signed, &upload_id, stream).await {
        Ok(tail) => tail,
        Err(status) => {
            discard(&app.store, &upload_id).await;
            return Err(status);
        }
    };
    let route = Route {
        from: from_now,
        to: dest.info.laestab,
        peer: Some(PeerLink::RelayedFrom(peer.to_string())),
    };
    let event = Event::by_peer(peer, "pack.relay.in", h.pack_id);
    let committed = app
        .store
        .commit_upload(
            &upload_id,
            &signed,
            &header_bytes,
            tail,
            now_ms(),
            event,
            None,
            Some(route),
        )
        .await;
    let at = match committed {
        Ok(Committed::Stored(at) | Committed::AlreadyStored(at)) => at,
        Ok(Committed::Conflict) => {
            discard(&app.store, &upload_id).await;
            return Err(Status::already_exists(format!(
                "another pack with id {} is stored",
                h.pack_id
            )));
        }
        Ok(Committed::DirectoryMoved) => {
            discard(&app.store, &upload_id).await;
            return Err(Status::unavailable("the directory moved; relay again"));
        }
        Err(e) => {
            discard(&app.store, &upload_id).await;
            return Err(store_status(e));
        }
    };
    tracing::info!(pack = %h.pack_id, peer, to = %h.to, bytes = h.ciphertext_len, "relayed pack stored");
    if let Some(old) = h.supersedes
        && let Err(e) = crate::retention::supersede(&app.store, &from_now, h.pack_id, old).await
    {
        tracing::error!(error = %e, pack = %h.pack_id, "could not withdraw the pack a relayed correction supersedes; the hourly run will");
    }
    Ok(stored_receipt(at))
}

/// Checks and records the receipt `peer` passes back for a pack this
/// daemon relayed to it; when it was recorded.
pub async fn return_receipt<S: Store>(
    app: &App<S>,
    peer: &str,
    wire: &v1::Receipt,
) -> Result<i64, Status> {
    let signed = SignedReceipt::try_from(wire).map_err(wire_status)?;
    let r = signed.receipt();
    let pack = app
        .store
        .pack(r.pack_id)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("no pack {}", r.pack_id)))?;
    let state = app
        .store
        .relay_state(&r.pack_id.to_string())
        .await
        .map_err(store_status)?
        .unwrap_or_default();
    if state.relay_to.as_deref() != Some(peer) || state.relayed_at_ms.is_none() {
        return Err(Status::permission_denied(format!(
            "pack {} was not relayed to {peer}",
            r.pack_id
        )));
    }
    if pack.ciphertext_sha256 != r.ciphertext_sha256 {
        return Err(Status::invalid_argument(
            "field `receipt.ciphertext_sha256`: does not match the stored pack",
        ));
    }
    let header = v1::PackHeader::decode(pack.header.as_slice())
        .map_err(|_| Status::unavailable("storage failure"))?;
    let key_id = r.recipient_key_id.to_string();
    if !header.recipient_key_ids.contains(&key_id) {
        return Err(Status::permission_denied(format!(
            "pack {} was not sealed to key {key_id}",
            r.pack_id
        )));
    }
    let school = peer_school(&app.store, &pack.to)
        .await
        .map_err(store_status)?
        .filter(|s| s.peer == peer)
        .ok_or_else(|| {
            Status::failed_precondition(format!("school {} is not listed by {peer} now", pack.to))
        })?;
    // An active key, as a school here acknowledges with one.
    let key = keys_of(&school)
        .into_iter()
        .find(|k| k.key_id() == r.recipient_key_id && k.is_active())
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "key {key_id} is not an active key of school {} as {peer} lists it now",
                pack.to
            ))
        })?;
    let event = Event::by_peer(peer, "pack.acknowledge", r.pack_id);
    crate::services::exchange::receipts::record(app, &signed, &key.public, event).await
}

/// Checks and applies the recall `peer` passes on for a pack it relayed
/// here: signed by a key of the sending school (of its escrow, for a pack
/// the escrow re-addressed) as `peer` lists it (a DSL key for a
/// child-protection file), naming the pack and its ciphertext.
pub async fn relay_recall<S: Store>(
    app: &App<S>,
    peer: &str,
    wire: &v1::Recall,
) -> Result<v1::PackState, Status> {
    let signed = SignedRecall::try_from(wire).map_err(wire_status)?;
    let r = signed.recall();
    let id = r.pack_id;
    let pack = app
        .store
        .pack(id)
        .await
        .map_err(store_status)?
        .filter(|p| p.relayed_from.as_deref() == Some(peer))
        .ok_or_else(|| Status::not_found(format!("{peer} relayed no pack {id} here")))?;
    if pack.ciphertext_sha256 != r.ciphertext_sha256 {
        return Err(Status::invalid_argument(
            "field `recall.ciphertext_sha256`: does not match the stored pack",
        ));
    }
    let header = v1::PackHeader::decode(pack.header.as_slice())
        .map_err(|_| Status::unavailable("storage failure"))?;
    // Its sender: the school, or for a re-addressed pack the peer's escrow.
    let (keys, signer) = if header.forwarded.is_some() {
        (
            super::readdressed::escrow_keys(app, peer).await?,
            format!("{peer}'s escrow"),
        )
    } else {
        let sender = peer_school(&app.store, &pack.from)
            .await
            .map_err(store_status)?
            .filter(|s| s.peer == peer)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "school {} is not listed by {peer} now",
                    pack.from
                ))
            })?;
        (keys_of(&sender), format!("school {}", pack.from))
    };
    // A key active when it signed the recall (a recall waiting in the
    // peer's queue may outlive its key).
    let key = keys
        .into_iter()
        .find(|k| k.key_id() == r.signer_key_id && signed_while_active(k, r.recalled_at_ms))
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "field `recall.signer_key_id`: not a key of {signer} that was active when the recall was signed"
            ))
        })?;
    if crate::services::wire::kind_of(&header) == Kind::Safeguarding
        && !key.roles.contains(&Role::Dsl)
    {
        return Err(Status::permission_denied(
            "a child-protection file is recalled by the school's DSL: this key does not hold the dsl role",
        ));
    }
    signed
        .verify(&key.public)
        .map_err(|e| Status::invalid_argument(format!("field `recall.signature`: {e}")))?;
    let bytes = v1::Recall::from(&signed).encode_to_vec();
    let event = Event::by_peer(
        peer,
        "pack.recall",
        deletion_record(id, &pack.ciphertext_sha256, "recalled"),
    );
    match app
        .store
        .withdraw(id, Withdrawal::Recall(&bytes), now_ms(), event)
        .await
        .map_err(store_status)?
    {
        Withdrawn::BeforeDownload(_) => Ok(v1::PackState::Recalled),
        Withdrawn::AfterDownload(_) => Ok(v1::PackState::RecallRequested),
        Withdrawn::Purged => Ok(v1::PackState::Purged),
        Withdrawn::Superseded(_) | Withdrawn::Readdressed(_) => Err(Status::failed_precondition(
            "the pack was withdrawn here already",
        )),
    }
}

/// Records what `peer` reports of a pack this daemon relayed to it: its
/// school collected it, or its retention purged it before a receipt.
pub async fn report_state<S: Store>(
    app: &App<S>,
    peer: &str,
    req: &v1::ReportStateRequest,
) -> Result<(), Status> {
    let id: baton::pack::PackId = req
        .pack_id
        .parse()
        .map_err(|e| Status::invalid_argument(format!("field `pack_id`: {e}")))?;
    let state = app
        .store
        .relay_state(&id.to_string())
        .await
        .map_err(store_status)?
        .unwrap_or_default();
    if state.relay_to.as_deref() != Some(peer) || state.relayed_at_ms.is_none() {
        return Err(Status::permission_denied(format!(
            "pack {id} was not relayed to {peer}"
        )));
    }
    match v1::PackState::try_from(req.state) {
        Ok(v1::PackState::Downloaded) => app
            .store
            .mark_downloaded(id, now_ms(), Event::by_peer(peer, "pack.download", id))
            .await
            .map_err(store_status),
        Ok(v1::PackState::Purged) => {
            // Purged there before a receipt: this daemon's record says so
            // too, whatever its own retention says. Its reason follows
            // from whether the school collected it, which this report
            // carries (a collection may not have been reported first).
            match req.purge_reason.as_str() {
                crate::store::lifecycle::reason::NOT_ACKNOWLEDGED => app
                    .store
                    .mark_downloaded(id, now_ms(), Event::by_peer(peer, "pack.download", id))
                    .await
                    .map_err(store_status)?,
                crate::store::lifecycle::reason::NOT_COLLECTED => {}
                other => {
                    return Err(Status::invalid_argument(format!(
                        "field `purge_reason`: {:?} is not a reason to purge before a receipt",
                        super::sync::clean(other)
                    )));
                }
            }
            let everything = crate::store::Cutoffs {
                acknowledged_before_ms: i64::MIN,
                uploaded_before_ms: i64::MAX,
            };
            app.store
                .purge(id, everything, now_ms(), &format!("peer:{peer}"))
                .await
                .map(|_| ())
                .map_err(store_status)
        }
        _ => Err(Status::invalid_argument(
            "field `state`: PACK_STATE_DOWNLOADED or PACK_STATE_PURGED",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_what_it_signed_before_it_was_revoked() {
        let mut key = crate::store::conformance::key(1);
        assert!(signed_while_active(&key, 1_000));
        key.revoked_at_ms = Some(500);
        assert!(signed_while_active(&key, 499));
        assert!(!signed_while_active(&key, 500));
        assert!(!signed_while_active(&key, 1_000));
    }
}
