//! `Exchange.Acknowledge` and `Exchange.AcknowledgeMany`: checking a
//! school's signed receipt against the pack, the caller's key and the
//! directory, and recording it. Many receipts in one call are checked and
//! recorded a few at a time, so the store's write queue commits them
//! together, and each is answered on its own.

use baton::api::v1;
use baton::pack::SignedReceipt;
use futures_util::StreamExt as _;
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{active_key, recall, visible};
use crate::app::App;
use crate::audit::Event;
use crate::auth::{self, KeyHolder};
use crate::cache::View;
use crate::services::wire::{store_status, wire_status};
use crate::store::{Acknowledged, Store, now_ms};

/// The most receipts one `AcknowledgeMany` call may carry.
pub const MAX_RECEIPTS: usize = 500;
/// Receipts of one call checked and recorded at once.
const AT_ONCE: usize = 16;

/// Checks and records one receipt from `holder`; when it was recorded.
pub(super) async fn acknowledge_one<S: Store>(
    app: &App<S>,
    holder: &KeyHolder,
    directory: &View<'_, S>,
    wire: &v1::Receipt,
) -> Result<i64, Status> {
    let signed = SignedReceipt::try_from(wire).map_err(wire_status)?;
    let pack = app
        .store
        .pack(signed.receipt().pack_id)
        .await
        .map_err(store_status)?;
    acknowledge_read(app, holder, directory, signed, pack).await
}

/// [`acknowledge_one`] of a receipt whose pack was read already (`None`:
/// there is none).
async fn acknowledge_read<S: Store>(
    app: &App<S>,
    holder: &KeyHolder,
    directory: &View<'_, S>,
    signed: SignedReceipt,
    pack: Option<crate::store::StoredPack>,
) -> Result<i64, Status> {
    let caller = holder.school;
    let r = signed.receipt();
    let (pack, header) = visible(holder, r.pack_id, pack)?;
    if recall::closed_to_destination(&pack)
        && let Some(why) = recall::gone(&pack, r.pack_id)
    {
        return Err(Status::not_found(why));
    }
    // Only a key the pack was sealed to can have opened it.
    let sealed_to_caller = holder
        .key_id
        .is_some_and(|k| header.recipient_key_ids.contains(&k.to_string()));
    if !sealed_to_caller {
        return Err(Status::permission_denied(format!(
            "pack {} was not sealed to your key: acknowledge it from a device it was sealed to",
            r.pack_id
        )));
    }
    if pack.ciphertext_sha256 != r.ciphertext_sha256 {
        return Err(Status::invalid_argument(
            "field `receipt.ciphertext_sha256`: does not match the stored pack",
        ));
    }
    let key = active_key(
        directory,
        &caller,
        r.recipient_key_id,
        "receipt.recipient_key_id",
    )
    .await?;
    let event = Event::by_school(&caller, "pack.acknowledge", r.pack_id);
    record(app, &signed, &key.public, event).await
}

/// Records `signed` once it verifies against `key`, the key of the
/// destination it names (a school here, or one a peer serves); when it
/// was recorded. The same receipt again is a retry; another one for the
/// same pack is refused.
pub(crate) async fn record<S: Store>(
    app: &App<S>,
    signed: &SignedReceipt,
    key: &baton::keys::PublicKey,
    event: Event,
) -> Result<i64, Status> {
    let id = signed.receipt().pack_id;
    signed
        .verify(key)
        .map_err(|e| Status::invalid_argument(format!("field `receipt.signature`: {e}")))?;
    let bytes = v1::Receipt::from(signed).encode_to_vec();
    match app
        .store
        .acknowledge(id, &bytes, now_ms(), event)
        .await
        .map_err(store_status)?
    {
        Acknowledged::At(at) => Ok(at),
        Acknowledged::Conflict => Err(Status::already_exists(format!(
            "pack {id} is already acknowledged with another receipt"
        ))),
    }
}

/// `Exchange.AcknowledgeMany`: every receipt as `Acknowledge` would treat
/// it, concurrently; one outcome each, in order, and one checkpoint.
pub(super) async fn acknowledge_many<S: Store>(
    app: &App<S>,
    request: Request<v1::AcknowledgeManyRequest>,
) -> Result<Response<v1::AcknowledgeManyResponse>, Status> {
    let (holder, directory) = auth::key_holder(app, &request).await?;
    let receipts = request.into_inner().receipts;
    if receipts.len() > MAX_RECEIPTS {
        return Err(Status::invalid_argument(format!(
            "field `receipts`: {} receipts; at most {MAX_RECEIPTS} a call",
            receipts.len()
        )));
    }
    // Every pack named, in one read.
    let ids: Vec<baton::pack::PackId> = receipts
        .iter()
        .filter_map(|r| r.pack_id.parse().ok())
        .collect();
    let packs: std::collections::HashMap<_, _> = app
        .store
        .packs(&ids)
        .await
        .map_err(store_status)?
        .into_iter()
        .collect();
    // A few at a time: enough for the write queue to commit them together,
    // not so many that one call takes every database connection.
    let mut checks = Vec::with_capacity(receipts.len());
    for wire in &receipts {
        let holder = &holder;
        let directory = &directory;
        let read = SignedReceipt::try_from(wire)
            .map_err(wire_status)
            .map(|signed| {
                let pack = packs.get(&signed.receipt().pack_id).cloned();
                (signed, pack)
            });
        checks.push(async move {
            let (signed, pack) = read?;
            acknowledge_read(app, holder, directory, signed, pack).await
        });
    }
    let answers: Vec<_> = futures_util::stream::iter(checks)
        .buffered(AT_ONCE)
        .collect()
        .await;
    let outcomes = receipts
        .iter()
        .zip(answers)
        .map(|(wire, answer)| {
            let pack_id = wire
                .pack_id
                .parse::<baton::pack::PackId>()
                .map(|id| id.to_string())
                .unwrap_or_default();
            match answer {
                Ok(at) => v1::AcknowledgeOutcome {
                    pack_id,
                    code: tonic::Code::Ok as i32,
                    message: String::new(),
                    acknowledged_at_ms: at,
                },
                Err(status) => v1::AcknowledgeOutcome {
                    pack_id,
                    code: status.code() as i32,
                    message: status.message().to_string(),
                    acknowledged_at_ms: 0,
                },
            }
        })
        .collect();
    Ok(Response::new(v1::AcknowledgeManyResponse {
        outcomes,
        checkpoint: app.checkpoint().await,
    }))
}
