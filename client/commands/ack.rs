//! `baton ack`: sign a receipt for each pulled pack and send it, so the
//! sending school holds proof of when its pack arrived.

use anyhow::{Context as _, Result, bail};
use baton::api::v1;
use baton::pack::{PackId, Receipt};

use crate::commands::pull::Pulled;
use crate::connect::{connect, explain, unreachable};
use crate::home::Home;
use crate::output::{json, now_ms};

/// Receipts sent in one `AcknowledgeMany` call.
const RECEIPTS_PER_CALL: usize = 100;

/// One answer a receipt, and the checkpoint the server signed.
type Answers = (Vec<Result<(), tonic::Status>>, Option<v1::AuditCheckpoint>);

/// Sends `batch` in one call; from a server without `AcknowledgeMany`, one
/// `Acknowledge` a receipt instead.
async fn send(
    exchange: &baton::api::v1::exchange_client::ExchangeClient<crate::connect::Authed>,
    batch: &[(String, v1::Receipt)],
) -> Result<Answers, tonic::Status> {
    let request = v1::AcknowledgeManyRequest {
        receipts: batch.iter().map(|(_, r)| r.clone()).collect(),
    };
    match exchange.clone().acknowledge_many(request).await {
        Ok(response) => {
            let response = response.into_inner();
            if response.outcomes.len() != batch.len() {
                return Err(tonic::Status::internal(
                    "the server answered a different number of receipts",
                ));
            }
            let answers = response
                .outcomes
                .into_iter()
                .map(|o| match tonic::Code::from_i32(o.code) {
                    tonic::Code::Ok => Ok(()),
                    code => Err(tonic::Status::new(code, o.message)),
                })
                .collect();
            Ok((answers, response.checkpoint))
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            let mut answers = Vec::with_capacity(batch.len());
            let mut checkpoint = None;
            for (_, receipt) in batch {
                let one = v1::AcknowledgeRequest {
                    receipt: Some(receipt.clone()),
                };
                match exchange.clone().acknowledge(one).await {
                    Ok(r) => {
                        checkpoint = r.into_inner().checkpoint.or(checkpoint);
                        answers.push(Ok(()));
                    }
                    Err(s) if unreachable(&s) => return Err(s),
                    Err(s) => answers.push(Err(s)),
                }
            }
            Ok((answers, checkpoint))
        }
        Err(s) => Err(s),
    }
}

/// Acknowledge pulled packs with signed receipts.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pack ids to acknowledge (they must have been pulled here).
    #[arg(value_name = "ID", required_unless_present = "all_pulled")]
    ids: Vec<PackId>,
    /// Acknowledge every pulled pack not yet acknowledged.
    #[arg(long, conflicts_with = "ids")]
    all_pulled: bool,
    /// Print a JSON array (one object per pack) instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `baton ack`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let mut pulled = Pulled::load(home)?;
    let ids: Vec<String> = if args.all_pulled {
        pulled
            .packs
            .iter()
            .filter(|(_, p)| p.acknowledged_at_ms.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    } else {
        args.ids.iter().map(ToString::to_string).collect()
    };
    if ids.is_empty() {
        if args.json {
            json(&serde_json::Value::Array(Vec::new()));
        } else {
            println!("nothing to acknowledge");
        }
        return Ok(());
    }
    let mut report = Vec::new();
    let mut say = |id: &str, state: &str, error: Option<String>| {
        match (&error, args.json) {
            (Some(e), _) => eprintln!("{id}: {e}"),
            (None, false) => println!("{id} {state}"),
            (None, true) => {}
        }
        report.push(serde_json::json!({"id": id, "state": state, "error": error}));
    };
    let identity = home.identity()?;
    let clients = connect(home).await?;
    let mut failed = 0;
    let mut book = crate::checkpoint::Book::load(home)?;
    // Receipts are signed here in order and sent many to a call
    // (`AcknowledgeMany`), each answered on its own, in order.
    let mut signed = Vec::new();
    for id in ids {
        let Some(pack) = pulled.packs.get(&id) else {
            say(
                &id,
                "failed",
                Some(format!(
                    "not pulled here yet: run `baton pull {id} --out DIR` first"
                )),
            );
            failed += 1;
            continue;
        };
        let sha: [u8; 32] = hex::decode(&pack.ciphertext_sha256)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("pulled.json holds a malformed hash")?;
        let receipt = Receipt {
            pack_id: id.parse()?,
            ciphertext_sha256: sha,
            received_at_ms: pack.pulled_at_ms,
            recipient_key_id: identity.key_id(),
        };
        signed.push((id, v1::Receipt::from(&identity.sign_receipt(receipt)?)));
    }
    let mut unreachable_server = None;
    for batch in signed.chunks(RECEIPTS_PER_CALL) {
        let answers = match send(&clients.exchange, batch).await {
            Ok((answers, checkpoint)) => {
                book.observe(checkpoint.as_ref());
                answers
            }
            Err(s) if unreachable(&s) => {
                unreachable_server = Some(s);
                break;
            }
            Err(s) => batch.iter().map(|_| Err(s.clone())).collect(),
        };
        for ((id, _), answer) in batch.iter().zip(answers) {
            let acknowledged = match answer {
                Ok(()) => {
                    say(id, "acknowledged", None);
                    true
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    say(id, "already-acknowledged", None);
                    true
                }
                Err(s) => {
                    failed += 1;
                    say(id, "failed", Some(explain(&s)));
                    false
                }
            };
            if acknowledged && let Some(pack) = pulled.packs.get_mut(id) {
                pack.acknowledged_at_ms = Some(now_ms());
            }
        }
    }
    // What was acknowledged is kept even if the server then went away.
    pulled.save(home)?;
    book.finish(home)?;
    if let Some(s) = unreachable_server {
        bail!("acknowledging: {}", explain(&s));
    }
    if args.json {
        json(&serde_json::Value::Array(report));
    }
    if failed > 0 {
        bail!("{failed} pack(s) were not acknowledged");
    }
    Ok(())
}
