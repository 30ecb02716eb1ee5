//! Recall and the other end of a withdrawal: the sender's `Recall` call,
//! and what the destination is told when it asks for a pack whose
//! ciphertext is gone (recalled, superseded or purged).

use baton::api::v1;
use baton::keys::Role;
use baton::pack::{Kind, SignedRecall};
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{Service, active_key, stored_header};
use crate::audit::{Event, time};
use crate::auth;
use crate::services::wire::{kind_of, store_status, wire_status};
use crate::store::lifecycle::deletion_record;
use crate::store::{PackStatus, Store, StoredPack, Withdrawal, Withdrawn, now_ms};

/// Why a pack's ciphertext is gone, for its destination, or `None` while the
/// server holds it: what happened and when, never the sender's free text.
pub(super) fn gone(pack: &StoredPack, id: baton::pack::PackId) -> Option<String> {
    pack.deleted_at_ms?;
    if let Some(by) = pack.readdressed_as {
        return Some(format!(
            "pack {id} was re-addressed by the trust's escrow as pack {by}: it is no longer held"
        ));
    }
    if let Some(by) = pack.superseded_by {
        return Some(format!(
            "pack {id} was superseded by pack {by}, which corrects it: pull that one instead"
        ));
    }
    if let Some(at) = pack.recalled_at_ms {
        // The sender's reason travels in its signed recall, which the
        // receiver checks; the server's own words carry no free text.
        return Some(format!(
            "pack {id} was recalled by its sender on {}: it is no longer available",
            time(at)
        ));
    }
    let at = pack.purged_at_ms.or(pack.deleted_at_ms).unwrap_or_default();
    Some(format!(
        "pack {id} was purged on {} under the trust's retention rules ({}): the server no longer holds it",
        time(at),
        pack.purge_reason.as_deref().unwrap_or("retention")
    ))
}

/// Whether the destination may still confirm or acknowledge a pack whose
/// ciphertext is gone: only one it had downloaded (it holds the record, and
/// a receipt is still evidence).
pub(super) fn closed_to_destination(pack: &StoredPack) -> bool {
    pack.status == PackStatus::Recalled
        || (pack.deleted_at_ms.is_some() && pack.downloaded_at_ms.is_none())
}

impl<S: Store> Service<S> {
    /// `Exchange.Recall`.
    pub(super) async fn recall_pack(
        &self,
        request: Request<v1::RecallRequest>,
    ) -> Result<Response<v1::RecallResponse>, Status> {
        let (holder, directory) = auth::key_holder(&self.app, &request).await?;
        let caller = holder.school;
        let wire = request
            .into_inner()
            .recall
            .ok_or_else(|| Status::invalid_argument("field `recall`: missing"))?;
        let signed = SignedRecall::try_from(&wire).map_err(wire_status)?;
        let r = signed.recall();
        let id = r.pack_id;
        // The same answer whether another school's pack exists or not.
        let pack = self
            .app
            .store
            .pack(id)
            .await
            .map_err(store_status)?
            .filter(|p| p.from == caller)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "your school sent no pack {id}: only its sender may recall a pack"
                ))
            })?;
        let header = stored_header(&pack)?;
        if holder.key_id != Some(r.signer_key_id) {
            return Err(Status::permission_denied(
                "field `recall.signer_key_id`: a recall is signed by the key of the device that sends it",
            ));
        }
        let key = active_key(&directory, &caller, r.signer_key_id, "recall.signer_key_id").await?;
        if kind_of(&header) == Kind::Safeguarding && !key.roles.contains(&Role::Dsl) {
            return Err(Status::permission_denied(
                "a child-protection file is recalled by the school's DSL: this key does not hold the dsl role",
            ));
        }
        if pack.ciphertext_sha256 != r.ciphertext_sha256 {
            return Err(Status::invalid_argument(
                "field `recall.ciphertext_sha256`: does not match the stored pack",
            ));
        }
        signed
            .verify(&key.public)
            .map_err(|e| Status::invalid_argument(format!("field `recall.signature`: {e}")))?;
        let bytes = v1::Recall::from(&signed).encode_to_vec();
        let event = Event::by_school(
            &caller,
            "pack.recall",
            deletion_record(id, &pack.ciphertext_sha256, "recalled"),
        );
        let withdrawn = self
            .app
            .store
            .withdraw(id, Withdrawal::Recall(&bytes), now_ms(), event)
            .await
            .map_err(store_status)?;
        let (state, at) = match withdrawn {
            // Addressed to another trust's school: this daemon passes the
            // recall on (the pack may have reached it even if the answer
            // did not) and cannot say whether that school had collected it.
            Withdrawn::BeforeDownload(at) if pack.relay_to.is_some() => {
                (v1::PackState::RecallRequested, at)
            }
            Withdrawn::BeforeDownload(at) => (v1::PackState::Recalled, at),
            Withdrawn::AfterDownload(at) => (v1::PackState::RecallRequested, at),
            Withdrawn::Superseded(by) => {
                return Err(Status::failed_precondition(format!(
                    "pack {id} is already superseded by pack {by}: recall that one if it is wrong too"
                )));
            }
            Withdrawn::Readdressed(by) => {
                return Err(Status::failed_precondition(format!(
                    "pack {id} was re-addressed by the trust's escrow as pack {by}, to the school the pupil joined: `baton sent` names it; ask that school to set it aside"
                )));
            }
            Withdrawn::Purged => {
                return Err(Status::failed_precondition(format!(
                    "pack {id} was purged on {}: its destination acknowledged it long ago and holds the record; contact the school",
                    time(pack.purged_at_ms.unwrap_or_default())
                )));
            }
        };
        reclaim(&self.app.store).await;
        tracing::info!(pack = %id, from = %caller, to = %pack.to, state = state.as_str_name(), "pack recalled");
        Ok(Response::new(v1::RecallResponse {
            state: state as i32,
            recalled_at_ms: at,
            checkpoint: self.app.checkpoint().await,
            relayed_to: pack.relay_to.clone().unwrap_or_default(),
        }))
    }
}

/// Makes withdrawn bytes unrecoverable from the database's files now, where
/// the backend can; a busy log is left to the next purge (logged).
pub(super) async fn reclaim<S: Store>(store: &S) {
    match store.reclaim().await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("the write-ahead log was busy: deleted bytes leave it later"),
        Err(e) => tracing::warn!(error = %e, "could not checkpoint the write-ahead log"),
    }
}
