//! Re-addressing: the trust's escrow forwards a pack it holds (addressed to
//! `XXXXXXX` or `MMMMMMM`) to the school the pupil joined, as an upload
//! whose signed header carries the original's header and age header
//! (`forwarded`). Here: what the server checks of such an upload, marking
//! the original once it is stored, and what the original's sender is shown.

use baton::Laestab;
use baton::api::v1;
use baton::pack::{PackId, SignedHeader};
use prost::Message as _;
use tonic::Status;

use super::stored_header;
use crate::app::App;
use crate::audit::Event;
use crate::services::wire::store_status;
use crate::store::lifecycle::deletion_record;
use crate::store::{Store, StoredPack, now_ms};

/// A forwarding upload comes from the escrow, to a school, and names,
/// byte for byte, a pack held in escrow that no other pack forwards yet,
/// of the same kind and leaving date; its original was framed in format 2
/// or later (the forwarding pack's framing).
pub(super) async fn check_forwarding<S: Store>(
    app: &App<S>,
    caller: &Laestab,
    signed: &SignedHeader,
) -> Result<(), Status> {
    let h = signed.header();
    let Some(forwarded) = &h.forwarded else {
        return Ok(());
    };
    if *caller != Laestab::ESCROW {
        return Err(Status::permission_denied(
            "only the trust's escrow re-addresses packs (field `header.forwarded`)",
        ));
    }
    if h.to.is_escrow() {
        return Err(Status::invalid_argument(
            "field `header.to`: a pack is re-addressed to a school, not to the escrow",
        ));
    }
    let original = forwarded.original.header();
    let held = app
        .store
        .pack(original.pack_id)
        .await
        .map_err(store_status)?
        .filter(|p| p.to == Laestab::ESCROW)
        .filter(|p| p.header == v1::PackHeader::from(forwarded.original.as_ref()).encode_to_vec())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "field `header.forwarded.original`: pack {} is not a pack held in escrow, as its sender signed it",
                original.pack_id
            ))
        })?;
    if let Some(done) = held.readdressed_as
        && done != h.pack_id
    {
        return Err(Status::failed_precondition(format!(
            "pack {} was re-addressed already, as pack {done}",
            original.pack_id
        )));
    }
    if held.deleted_at_ms.is_some() && held.readdressed_as.is_none() {
        return Err(Status::failed_precondition(format!(
            "pack {} is no longer held (recalled, superseded or purged)",
            original.pack_id
        )));
    }
    if !h.keeps_forwarded_original() {
        return Err(Status::invalid_argument(
            "field `header.forwarded`: a re-addressed pack keeps the original's kind and leaving date",
        ));
    }
    if original.format_version < 2 {
        return Err(Status::failed_precondition(format!(
            "pack {} is in pack format {}, which cannot be re-addressed: ask its sender to send it again to the new school",
            original.pack_id, original.format_version
        )));
    }
    Ok(())
}

/// Marks the original of a stored forwarding pack as re-addressed and
/// deletes the escrow's copy; idempotent. A failure does not fail the
/// upload: the daemon's hourly run finishes it.
pub(super) async fn after_commit<S: Store>(app: &App<S>, signed: &SignedHeader) {
    let h = signed.header();
    let Some(forwarded) = &h.forwarded else {
        return;
    };
    if let Err(e) = mark(
        &app.store,
        h.pack_id,
        forwarded.original.header().pack_id,
        h.to,
    )
    .await
    {
        tracing::error!(error = %e, pack = %h.pack_id, "could not mark a re-addressed pack; the hourly run will");
    }
}

/// Records that `old`, held in escrow, is forwarded as `new` to `to`.
pub async fn mark<S: Store>(
    store: &S,
    new: PackId,
    old: PackId,
    to: Laestab,
) -> anyhow::Result<()> {
    let Some(held) = store.pack(old).await? else {
        return Ok(());
    };
    let event = Event::by_school(
        &Laestab::ESCROW,
        "pack.readdress",
        deletion_record(
            old,
            &held.ciphertext_sha256,
            &format!("re-addressed to {to} as {new}"),
        ),
    );
    if let Some(other) = store.readdress(old, new, now_ms(), event).await? {
        tracing::warn!(pack = %old, %other, "a pack was forwarded twice; the first stands");
    }
    Ok(())
}

/// For a pack the escrow forwarded: where to, the forwarding pack's header
/// and, once that school acknowledged it, its receipt.
pub(super) async fn forwarding_of<S: Store>(
    app: &App<S>,
    p: &StoredPack,
) -> Result<(String, Option<v1::PackHeader>, Option<v1::Receipt>), Status> {
    let Some(id) = p.readdressed_as else {
        return Ok((String::new(), None, None));
    };
    let Some(forwarding) = app.store.pack(id).await.map_err(store_status)? else {
        return Ok((String::new(), None, None));
    };
    let header = stored_header(&forwarding)?;
    let receipt = forwarding
        .receipt
        .as_deref()
        .and_then(|r| v1::Receipt::decode(r).ok());
    Ok((header.to.clone(), Some(header), receipt))
}
