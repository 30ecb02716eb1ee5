//! `baton recall`: withdraw packs this school sent (to the wrong school, or
//! before the record was complete). Each recall is signed here with this
//! device's key, so the destination can check that the school, not the
//! server, withdrew the pack. A pack not yet downloaded is deleted and
//! disappears from the destination's inbox; one already downloaded cannot
//! be un-sent, so the destination is shown the signed recall instead.
//! Also the receiving side's check of a recall it is shown ([`verified`]).

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::api::v1;
use baton::pack::{PackId, Recall, SignedHeader, SignedRecall};

use crate::connect::{Clients, connect, explain};
use crate::home::Home;
use crate::outbox::Outbox;
use crate::output::{UsageError, json, now_ms, time};
use crate::pins::{Pins, refresh_once};

/// Recall packs this school sent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ids of the packs to recall (`baton sent` lists them).
    #[arg(value_name = "ID", required = true)]
    ids: Vec<PackId>,
    /// Why, for the receiving school: one line, at most 300 characters. The
    /// trust's server sees it too, so say what went wrong ("sent to the
    /// wrong school"), never who the pupil is.
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    /// Print JSON (one object per pack) instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `baton recall`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let reason = args.reason.trim().to_string();
    Recall::check_reason(&reason).map_err(|e| UsageError(format!("--reason: {e}")))?;
    if names_a_pupil(&reason) {
        return Err(UsageError(
            "--reason: it holds what looks like a UPN; the server sees the reason, so say what went wrong, not who the pupil is".into(),
        )
        .into());
    }
    let identity = home.identity()?;
    let outbox = Outbox::open(home)?;
    let journal = outbox.entries()?;
    let mut clients = connect(home).await?;
    let mut sent: Option<Vec<v1::SentEntry>> = None;
    let mut book = crate::checkpoint::Book::load(home)?;
    let mut results = Vec::new();
    let mut failed = 0;
    for id in &args.ids {
        let header = match journal.iter().find(|e| e.pack_id == id.to_string()) {
            Some(entry) => entry.signed_header()?,
            None => listed_header(&mut clients, &mut sent, *id).await?,
        };
        let recall = identity.sign_recall(Recall {
            pack_id: *id,
            ciphertext_sha256: header.header().ciphertext_sha256,
            recalled_at_ms: now_ms(),
            signer_key_id: identity.key_id(),
            reason: reason.clone(),
        })?;
        let answer = clients
            .exchange
            .recall(v1::RecallRequest {
                recall: Some(v1::Recall::from(&recall)),
            })
            .await;
        let h = header.header();
        match answer {
            Ok(a) => {
                let a = a.into_inner();
                book.observe(a.checkpoint.as_ref());
                let state = if a.state == v1::PackState::RecallRequested as i32 {
                    "recall_requested"
                } else {
                    "recalled"
                };
                if !args.json {
                    if a.relayed_to.is_empty() {
                        println!("{}", said(*id, &h.to, state, a.recalled_at_ms));
                    } else {
                        println!(
                            "{id}: recalled at {}; it had reached another trust's server ({}), which is passed your signed recall: it deletes the pack if {} has not downloaded it, else shows {} the recall and asks it to set it aside",
                            time(a.recalled_at_ms),
                            a.relayed_to,
                            h.to,
                            h.to
                        );
                    }
                }
                results.push(
                    serde_json::json!({"id": id.to_string(), "to": h.to.to_string(),
                    "state": state, "recalled_at": time(a.recalled_at_ms), "error": null,
                    "relayed_to": (!a.relayed_to.is_empty()).then_some(&a.relayed_to)}),
                );
            }
            Err(status) => {
                failed += 1;
                let why = explain(&status);
                eprintln!("{id}: not recalled: {why}");
                results.push(
                    serde_json::json!({"id": id.to_string(), "to": h.to.to_string(),
                    "state": "failed", "error": why}),
                );
            }
        }
    }
    let audit = book.finish(home);
    if args.json {
        json(&serde_json::Value::Array(results));
    }
    if failed > 0 {
        audit?;
        bail!("{failed} pack(s) were not recalled (see above)");
    }
    audit
}

/// What the person recalling is told.
fn said(id: PackId, to: &Laestab, state: &str, at: i64) -> String {
    if state == "recalled" {
        format!(
            "{id}: recalled at {}; {to} had not downloaded it, and the server has deleted it",
            time(at)
        )
    } else {
        format!(
            "{id}: {to} had already downloaded it, so it cannot be un-sent: {to} is shown your signed recall and asked to set it aside; the server has deleted its copy"
        )
    }
}

/// The header of a pack this school sent, from the server's listing, for a
/// pack this home's journal does not know (sent from another device).
async fn listed_header(
    clients: &mut Clients,
    cache: &mut Option<Vec<v1::SentEntry>>,
    id: PackId,
) -> Result<SignedHeader> {
    if cache.is_none() {
        *cache = Some(crate::commands::sent::list(clients).await?);
    }
    let wire = cache
        .iter()
        .flatten()
        .filter_map(|e| e.header.as_ref())
        .find(|h| h.pack_id == id.to_string())
        .with_context(|| {
            format!("{id}: your school sent no such pack (`baton sent` lists them)")
        })?;
    SignedHeader::try_from(wire)
        .with_context(|| format!("{id}: the server sent a malformed header"))
}

/// Whether `text` holds something that parses as a UPN.
fn names_a_pupil(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word.len() == 13 && baton::upn::Upn::parse(&word.to_ascii_uppercase()).is_ok())
}

/// How a destination should take a recall the server shows it for a pack
/// from `from`: believed only when the pack's own header was signed by the
/// sender's pinned keys, the recall names that pack and its ciphertext, is
/// dated after it was sealed, and is signed by one of the sender's pinned
/// keys (not after that key's revocation) holding the role the kind needs
/// (`dsl` for a child-protection file), as the server requires. The server
/// can delete a pack, but not make up a recall.
pub async fn verified(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    header: &SignedHeader,
    recall: &SignedRecall,
) -> bool {
    let (h, r) = (header.header(), recall.recall());
    if r.pack_id != h.pack_id
        || r.ciphertext_sha256 != h.ciphertext_sha256
        || r.recalled_at_ms < h.created_at_ms
    {
        return false;
    }
    if refresh_once(home, clients, pins, &h.from).await.is_err() {
        return false;
    }
    if pins
        .revoked_at(&h.from, r.signer_key_id)
        .is_some_and(|at| r.recalled_at_ms > at)
    {
        return false;
    }
    let header_signed = pins.signed_by(&h.from, h.sender_key_id, |k| header.verify(k).is_ok());
    let recall_signed = pins.signed_by(&h.from, r.signer_key_id, |k| recall.verify(k).is_ok());
    let role_ok = h.kind != baton::pack::Kind::Safeguarding
        || pins.get(&h.from).is_some_and(|school| {
            school.keys.iter().any(|k| {
                k.key_id == r.signer_key_id.to_string() && k.roles.contains(&baton::keys::Role::Dsl)
            })
        });
    header_signed && recall_signed && role_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_that_names_a_upn_is_refused() {
        assert!(baton::upn::Upn::parse("H801200001001").is_ok());
        assert!(names_a_pupil("sent H801200001001 to the wrong school"));
        assert!(names_a_pupil("wrong school (h801200001001)."));
        assert!(!names_a_pupil(
            "sent to the wrong school before the SENCO report"
        ));
    }
}
