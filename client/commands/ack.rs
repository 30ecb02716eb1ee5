//! `baton ack`: sign a receipt for each pulled pack and send it, so the
//! sending school holds proof of when its pack arrived.

use anyhow::{Context as _, Result, bail};
use baton::api::v1;
use baton::pack::{PackId, Receipt};

use crate::commands::pull::Pulled;
use crate::connect::{connect, explain, unreachable};
use crate::home::Home;
use crate::output::{json, now_ms};

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
    // Receipts are signed here in order and sent a few at a time; the
    // answers are taken in the same order.
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(
        crate::commands::pull::CONCURRENCY,
    ));
    let mut sending = Vec::new();
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
        let signed = identity.sign_receipt(receipt)?;
        let (mut exchange, limit) = (clients.exchange.clone(), std::sync::Arc::clone(&limit));
        let answer = tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            exchange
                .acknowledge(v1::AcknowledgeRequest {
                    receipt: Some(v1::Receipt::from(&signed)),
                })
                .await
        });
        sending.push((id, answer));
    }
    let mut unreachable_server = None;
    for (id, answer) in sending {
        let answer = answer
            .await
            .context("sending a receipt failed unexpectedly")?;
        let acknowledged = match answer {
            Ok(response) => {
                book.observe(response.into_inner().checkpoint.as_ref());
                say(&id, "acknowledged", None);
                true
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                say(&id, "already-acknowledged", None);
                true
            }
            Err(s) if unreachable(&s) => {
                unreachable_server.get_or_insert(s);
                false
            }
            Err(s) => {
                failed += 1;
                say(&id, "failed", Some(explain(&s)));
                false
            }
        };
        if acknowledged && let Some(pack) = pulled.packs.get_mut(&id) {
            pack.acknowledged_at_ms = Some(now_ms());
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
