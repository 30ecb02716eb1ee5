//! A pack another trust's escrow re-addressed to one of this daemon's
//! schools (the pupil joined a school of this trust): what the receiving
//! daemon checks when the peer relays it, and whose keys a recall of it
//! must carry. The forwarding header is signed by the peer's escrow, as the
//! peer lists it (`directory::peer_escrow`); the original it carries was
//! addressed to an escrow and signed by a school that peer serves (a
//! child-protection file by a DSL key of it), with the kind and leaving
//! date the forwarding header repeats. The receiving school checks the
//! rest itself: the original against its own pins of the original sender,
//! and the record, byte for byte, against the original's signed hash.

use baton::Laestab;
use baton::keys::{KeyId, Role, SchoolKey};
use baton::pack::{Forwarded, Kind, SignedHeader};
use tonic::Status;

use super::directory::{keys_of, peer_escrow, peer_school};
use super::sync::Resync;
use crate::app::App;
use crate::store::Store;

/// Checks a re-addressed pack `peer` relays; returns the number it is
/// stored under (the original sender's current one, so this trust's own
/// escrow never sees it as its own) and the peer escrow's key that signed it.
pub async fn check<S: Store>(
    app: &App<S>,
    resync: &Resync,
    peer: &str,
    signed: &SignedHeader,
    forwarded: &Forwarded,
) -> Result<(Laestab, SchoolKey), Status> {
    let h = signed.header();
    if h.from != Laestab::ESCROW {
        return Err(Status::permission_denied(
            "field `header.forwarded`: only a trust's escrow re-addresses packs",
        ));
    }
    let escrow_key = match escrow_key(app, peer, h.sender_key_id).await {
        Err(_) if resync.now(&app.store, peer).await => {
            escrow_key(app, peer, h.sender_key_id).await
        }
        found => found,
    }?;
    let original = forwarded.original.header();
    if !original.to.is_escrow() {
        return Err(Status::invalid_argument(format!(
            "field `header.forwarded.original`: pack {} was addressed to {}, not held in escrow",
            original.pack_id, original.to
        )));
    }
    if !h.keeps_forwarded_original() {
        return Err(Status::invalid_argument(
            "field `header.forwarded`: a re-addressed pack keeps the original's kind and leaving date",
        ));
    }
    if original.format_version < 2 {
        return Err(Status::invalid_argument(format!(
            "field `header.forwarded.original`: pack {} is in pack format {}, which cannot be re-addressed",
            original.pack_id, original.format_version
        )));
    }
    let (author, author_key) = match author_key(app, peer, original).await {
        Err(_) if resync.now(&app.store, peer).await => author_key(app, peer, original).await,
        found => found,
    }?;
    if original.kind == Kind::Safeguarding && !author_key.roles.contains(&Role::Dsl) {
        return Err(Status::permission_denied(
            "field `header.forwarded.original`: a child-protection file is sent by the school's DSL: the key that signed the original does not hold the dsl role",
        ));
    }
    forwarded.original.verify(&author_key.public).map_err(|e| {
        Status::invalid_argument(format!("field `header.forwarded.original.signature`: {e}"))
    })?;
    Ok((author, escrow_key))
}

/// The original's sender, a school `peer` serves (its current number),
/// and its key that signed the original, active when the original was
/// sealed (a pack may wait in escrow longer than a key lives).
async fn author_key<S: Store>(
    app: &App<S>,
    peer: &str,
    original: &baton::pack::Header,
) -> Result<(Laestab, SchoolKey), Status> {
    let refused = |what: String| {
        Status::permission_denied(format!("field `header.forwarded.original`: {what}"))
    };
    let school = peer_school(&app.store, &original.from)
        .await
        .map_err(crate::services::wire::store_status)?
        .filter(|s| s.peer == peer)
        .ok_or_else(|| {
            refused(format!(
                "school {} is not one that {peer} serves",
                original.from
            ))
        })?;
    let key = keys_of(&school)
        .into_iter()
        .find(|k| {
            k.key_id() == original.sender_key_id
                && super::inbound::signed_while_active(k, original.created_at_ms)
        })
        .ok_or_else(|| {
            refused(format!(
                "not a key of school {} that was active when the original was sealed",
                original.from
            ))
        })?;
    Ok((school.laestab.parse().unwrap_or(original.from), key))
}

/// The active key `key_id` of `peer`'s escrow.
async fn escrow_key<S: Store>(
    app: &App<S>,
    peer: &str,
    key_id: KeyId,
) -> Result<SchoolKey, Status> {
    escrow_keys(app, peer)
        .await?
        .into_iter()
        .find(|k| k.key_id() == key_id && k.is_active())
        .ok_or_else(|| {
            Status::permission_denied(format!(
                "field `header.sender_key_id`: not an active key of {peer}'s escrow"
            ))
        })
}

/// The keys of `peer`'s escrow as it lists them; `FailedPrecondition` if
/// it lists none.
pub async fn escrow_keys<S: Store>(app: &App<S>, peer: &str) -> Result<Vec<SchoolKey>, Status> {
    let escrow = peer_escrow(&app.store, peer)
        .await
        .map_err(crate::services::wire::store_status)?
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "{peer} lists no escrow here: its directory is read again shortly"
            ))
        })?;
    Ok(keys_of(&escrow))
}
