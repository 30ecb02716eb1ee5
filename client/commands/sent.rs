//! `baton sent`: every pack this school sent, with the pupil (from the local
//! outbox journal: the server never knew), its state, and whether the
//! destination's receipt verifies against the keys pinned for it.
//! `--receipts DIR` files each receipt and a CSV log as evidence.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use baton::api::v1;
use baton::pack::{SignedHeader, SignedRecall, SignedReceipt};

use crate::clock;
use crate::connect::{Clients, connect, explain};
use crate::home::{Home, write_atomic, write_json};
use crate::outbox::Outbox;
use crate::output::{json, now_ms, table, time};
use crate::pins::{Pins, refresh, refresh_once};

/// List packs this school sent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write each receipt as a file, plus receipts.csv, into this folder.
    #[arg(long, value_name = "DIR")]
    receipts: Option<PathBuf>,
    /// List only overdue packs: not acknowledged, and past their due date
    /// (15 school days after the pupil left for a transfer pack, 5 for a
    /// child-protection file).
    #[arg(long)]
    overdue: bool,
}

/// One pack in the listing.
pub(crate) struct Row {
    /// The pack id.
    pub(crate) id: String,
    /// The destination school.
    pub(crate) to: String,
    /// Transfer or safeguarding.
    pub(crate) kind: String,
    /// The pupil's UPN, from the journal (empty once forgotten).
    pub(crate) upn: String,
    /// The pupil's name, likewise.
    pub(crate) name: String,
    /// Where it is in its life, as shown.
    pub(crate) state: &'static str,
    /// When the server stored it.
    pub(crate) sent_at: i64,
    /// When the destination first downloaded it (0: not yet).
    pub(crate) downloaded_at: i64,
    /// The destination's receipt, if any.
    pub(crate) receipt: Option<SignedReceipt>,
    /// Whether that receipt verifies against the destination's pinned keys.
    pub(crate) verified: bool,
    /// Why a pack is not on the server.
    pub(crate) error: Option<String>,
    /// The signed leaving date (format version 3 on).
    pub(crate) left: Option<time::Date>,
    /// The due date, from the trust's calendar.
    pub(crate) due: Option<time::Date>,
    /// How the pack ended early or late: withdrawn or purged.
    pub(crate) end: End,
}

/// What became of a pack after it was sent, besides its receipt.
#[derive(Default)]
pub(crate) struct End {
    /// The pack that corrects it.
    pub(crate) superseded_by: Option<String>,
    /// This school's recall, verified: its reason and time.
    pub(crate) recall: Option<(String, i64)>,
    /// Why retention purged it.
    pub(crate) purge_reason: Option<String>,
    /// When the server deleted its ciphertext.
    pub(crate) deleted_at: Option<i64>,
    /// The school the escrow forwarded it to (a pack sent to `XXXXXXX` or
    /// `MMMMMMM`), when the forwarding header names this pack.
    pub(crate) readdressed_to: Option<String>,
}

impl Row {
    fn acknowledged(&self) -> bool {
        self.state == "acknowledged"
            || (matches!(self.state, "purged" | "readdressed")
                && self.verified
                && self.receipt.is_some())
    }

    /// Still with the destination to act on: not withdrawn, purged or unsent.
    fn open(&self) -> bool {
        matches!(
            self.state,
            "pending" | "downloaded" | "relayed" | "acknowledged"
        )
    }

    pub(crate) fn overdue(&self) -> bool {
        self.open() && clock::overdue(self.due, self.acknowledged())
    }

    pub(crate) fn on_time(&self) -> Option<bool> {
        if !self.acknowledged() {
            return None;
        }
        clock::on_time(
            self.due,
            self.receipt.as_ref().map(|r| r.receipt().received_at_ms),
        )
    }
}

impl Row {
    /// A pack the server lists that none of this school's keys signed: its
    /// id only, nothing else believed.
    fn unsigned(wire: &v1::PackHeader) -> Self {
        Self {
            to: String::new(),
            state: "not signed here",
            ..Self::unreadable(wire)
        }
    }

    /// A pack whose header the server returned damaged: listed, never verified.
    fn unreadable(wire: &v1::PackHeader) -> Self {
        Self {
            id: wire.pack_id.clone(),
            to: wire.to.clone(),
            kind: String::new(),
            upn: String::new(),
            name: String::new(),
            state: "unreadable",
            sent_at: 0,
            downloaded_at: 0,
            receipt: None,
            verified: false,
            error: None,
            left: None,
            due: None,
            end: End::default(),
        }
    }
}

/// Every page of the packs this school sent, newest first.
pub async fn list(clients: &mut Clients) -> Result<Vec<v1::SentEntry>> {
    Ok(listing(clients).await?.0)
}

/// [`list`], and whether the trust has no calendar (due dates then count
/// weekdays that are not bank holidays).
async fn listing(clients: &mut Clients) -> Result<(Vec<v1::SentEntry>, bool)> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = clients
            .exchange
            .sent(v1::SentRequest {
                page_size: 500,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("listing sent packs: {}", explain(&s)))?
            .into_inner();
        out.extend(page.packs);
        if page.next_page_token.is_empty() {
            return Ok((out, page.no_calendar));
        }
        page_token = page.next_page_token;
    }
}

/// Every pack this school sent, checked: its pupil (from the journal), its
/// state, whether its receipt verifies; and whether the trust has no
/// calendar. What `baton sent` prints and the local page shows.
pub(crate) async fn collect(home: &Home) -> Result<(Vec<Row>, bool)> {
    let mut clients = connect(home).await?;
    let config = home.config()?;
    let keep_ms = i64::from(config.keep_pupil_names_days) * 86_400_000;
    let outbox = Outbox::open(home)?;
    let mut journal: HashMap<String, crate::outbox::Entry> = outbox
        .entries()?
        .into_iter()
        .map(|e| (e.pack_id.clone(), e))
        .collect();
    let mut pins = Pins::load(home)?;
    // Our own keys: the server's word on where a pack went counts only when
    // one of them signed the header. Those pinned (refreshed, so a
    // colleague's newly approved device counts), and this device's own,
    // which its key id (a hash of the key) identifies whatever the server says.
    let _ = refresh(home, &mut clients, &mut pins, &config.school).await;
    let mut own_keys = pins.verifying_keys(&config.school).unwrap_or_default();
    if !own_keys
        .iter()
        .any(|k| k.key_id().to_string() == config.key_id)
        && let Some(mine) = this_device(&mut clients, &config).await
    {
        own_keys.push(mine);
    }
    let mut rows = Vec::new();
    let (entries, no_calendar) = listing(&mut clients).await?;
    for e in entries {
        let wire = e.header.clone().unwrap_or_default();
        let header = match SignedHeader::try_from(&wire) {
            Ok(h) => h,
            Err(err) => {
                // One damaged entry must not hide the others.
                eprintln!(
                    "pack {}: the server sent a malformed header ({err})",
                    wire.pack_id
                );
                rows.push(Row::unreadable(&wire));
                continue;
            }
        };
        let signed_here = own_keys
            .iter()
            .any(|k| k.key_id() == header.header().sender_key_id && header.verify(k).is_ok());
        if !signed_here {
            eprintln!(
                "pack {}: the server lists it as sent by this school, but none of this school's keys signed it; its destination and receipt are not believed",
                wire.pack_id
            );
            rows.push(Row::unsigned(&wire));
            continue;
        }
        let h = header.header();
        // Forwarded by the escrow: the receipt that counts is the one the
        // school it went to signed for the forwarding pack, and only if the
        // escrow's signed forwarding header names this very pack.
        let forwarding = e
            .forwarding
            .as_ref()
            .and_then(|f| SignedHeader::try_from(f).ok())
            .filter(|f| {
                f.header()
                    .forwarded
                    .as_ref()
                    .is_some_and(|x| *x.original == header)
            });
        let forwarding = match forwarding {
            Some(f) if forwarder_signed(home, &mut clients, &mut pins, &f).await => Some(f),
            _ => None,
        };
        let receipt_wire = match &forwarding {
            Some(_) => e.forwarding_receipt.as_ref(),
            None => e.receipt.as_ref(),
        };
        let receipt = receipt_wire
            .map(SignedReceipt::try_from)
            .transpose()
            .ok()
            .flatten();
        let receipt_for = forwarding.as_ref().map_or(h, |f| f.header());
        let verified = match &receipt {
            Some(r) => verify(home, &mut clients, &mut pins, receipt_for, r).await,
            None => false,
        };
        // This school's own recall, checked against its own keys: the
        // server's word alone does not make a pack recalled.
        let recall = e
            .recall
            .as_ref()
            .and_then(|w| SignedRecall::try_from(w).ok())
            .filter(|r| {
                r.recall().pack_id == h.pack_id
                    && own_keys
                        .iter()
                        .any(|k| k.key_id() == r.recall().signer_key_id && r.verify(k).is_ok())
            });
        let deleted_at = (e.deleted_at_ms > 0).then_some(e.deleted_at_ms);
        // The journal forgets the pupil `keep_pupil_names_days` after the
        // pack is settled: its verified receipt, or its ciphertext deleted.
        let settled = match (&receipt, deleted_at) {
            (Some(r), _) if verified => Some(r.receipt().received_at_ms),
            (_, at) => at,
        };
        if let Some(at) = settled
            && let Some(entry) = journal.get_mut(&h.pack_id.to_string())
            && entry.settled(at, now_ms(), keep_ms)
        {
            outbox.put(entry)?;
        }
        let local = journal.get(&h.pack_id.to_string());
        rows.push(Row {
            id: h.pack_id.to_string(),
            to: h.to.to_string(),
            kind: h.kind.to_string(),
            upn: local.map(|l| l.upn.clone()).unwrap_or_default(),
            name: local.map(|l| l.name.clone()).unwrap_or_default(),
            // The server's word is not an acknowledgement: only a receipt
            // that verifies against the destination's pinned keys is.
            state: match v1::PackState::try_from(e.state) {
                Ok(v1::PackState::Acknowledged) if verified => "acknowledged",
                Ok(v1::PackState::Acknowledged) => "receipt does not verify",
                Ok(v1::PackState::Downloaded) => "downloaded",
                Ok(v1::PackState::Relayed) => "relayed",
                Ok(v1::PackState::Superseded) => "superseded",
                Ok(v1::PackState::Recalled) if recall.is_some() => "recalled",
                Ok(v1::PackState::RecallRequested) if recall.is_some() => "recall_requested",
                Ok(v1::PackState::Recalled | v1::PackState::RecallRequested) => {
                    "recall does not verify"
                }
                Ok(v1::PackState::Purged) => "purged",
                Ok(v1::PackState::Readdressed) if forwarding.is_some() => "readdressed",
                Ok(v1::PackState::Readdressed) => "forwarding does not verify",
                _ => "pending",
            },
            sent_at: e.uploaded_at_ms,
            downloaded_at: e.downloaded_at_ms,
            receipt,
            verified,
            error: None,
            left: h.left_on,
            due: clock::parse_due(&e.due),
            end: End {
                superseded_by: Some(e.superseded_by.clone()).filter(|s| !s.is_empty()),
                recall: recall.map(|r| (r.recall().reason.clone(), r.recall().recalled_at_ms)),
                purge_reason: Some(e.purge_reason.clone()).filter(|s| !s.is_empty()),
                deleted_at,
                readdressed_to: forwarding.as_ref().map(|f| f.header().to.to_string()),
            },
        });
    }
    // Packs sealed here that the server does not hold: a send that failed
    // (or was interrupted) must not vanish from the sender's view.
    let listed: std::collections::HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut unsent: Vec<&crate::outbox::Entry> = journal
        .values()
        .filter(|e| e.state != crate::outbox::State::Sent && !listed.contains(&e.pack_id))
        .collect();
    unsent.sort_by(|a, b| a.pack_id.cmp(&b.pack_id));
    for e in unsent {
        rows.push(Row {
            id: e.pack_id.clone(),
            to: e.to.clone(),
            kind: e.kind.to_string(),
            upn: e.upn.clone(),
            name: e.name.clone(),
            state: "not sent",
            sent_at: 0,
            downloaded_at: 0,
            receipt: None,
            verified: false,
            error: Some(e.error.clone().unwrap_or_else(|| {
                "sealed but not confirmed by the server: run the same send again".into()
            })),
            left: None,
            due: None,
            end: End::default(),
        });
    }
    Ok((rows, no_calendar))
}

/// Runs `baton sent`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let (mut rows, no_calendar) = collect(home).await?;
    if let Some(dir) = &args.receipts {
        write_receipts(dir, &rows)?;
    }
    if args.overdue {
        rows.retain(Row::overdue);
    }
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"id": r.id, "to": r.to, "kind": r.kind, "upn": r.upn, "name": r.name, "state": r.state,
                    "sent_at": time(r.sent_at), "downloaded_at": time(r.downloaded_at),
                    "received_at": r.receipt.as_ref().map(|x| time(x.receipt().received_at_ms)),
                    "receipt_verified": r.verified, "error": r.error,
                    "left": r.left.map(baton::dates::format_ymd), "due": r.due.map(baton::dates::format_ymd),
                    "overdue": r.overdue(), "on_time": r.on_time(),
                    "superseded_by": r.end.superseded_by, "recall_reason": r.end.recall.as_ref().map(|x| &x.0),
                    "recalled_at": r.end.recall.as_ref().map(|x| time(x.1)), "purge_reason": r.end.purge_reason,
                    "deleted_at": r.end.deleted_at.map(time), "readdressed_to": r.end.readdressed_to})
            })
            .collect();
        json(&serde_json::Value::Array(items));
        return Ok(());
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let receipt = match (&r.receipt, r.verified) {
                (None, _) => r.error.clone().unwrap_or_else(|| r.end.describe()),
                (Some(x), true) => format!("verified {}", time(x.receipt().received_at_ms)),
                (Some(_), false) => "DOES NOT VERIFY".to_string(),
            };
            let due = match (r.due, r.overdue(), r.on_time()) {
                (None, ..) => String::new(),
                (Some(d), true, _) => format!("{} OVERDUE", baton::dates::format_ymd(d)),
                (Some(d), _, Some(false)) => format!("{} (late)", baton::dates::format_ymd(d)),
                (Some(d), ..) => baton::dates::format_ymd(d),
            };
            vec![
                r.id.clone(),
                r.to.clone(),
                r.kind.clone(),
                r.upn.clone(),
                r.name.clone(),
                r.state.to_string(),
                due,
                receipt,
            ]
        })
        .collect();
    table(
        &["ID", "TO", "KIND", "UPN", "NAME", "STATE", "DUE", "RECEIPT"],
        &table_rows,
    );
    if let Some(line) =
        clock::overdue_line(rows.iter().filter(|r| r.overdue()).filter_map(|r| r.due))
    {
        eprintln!("{line}");
    }
    if no_calendar && rows.iter().any(|r| r.due.is_some()) {
        eprintln!("{}", clock::NO_CALENDAR);
    }
    if rows.is_empty() && args.overdue {
        eprintln!("no pack is overdue");
    } else if rows.is_empty() {
        eprintln!("nothing sent yet");
    }
    let not_sent = rows.iter().filter(|r| r.state == "not sent").count();
    if not_sent > 0 {
        eprintln!("{not_sent} pack(s) not sent (see RECEIPT for why)");
    }
    Ok(())
}

impl End {
    /// A word on how it ended, where a receipt would be.
    pub(crate) fn describe(&self) -> String {
        if let Some(to) = &self.readdressed_to {
            return format!("re-addressed to {to}, not acknowledged yet");
        }
        if let Some(by) = &self.superseded_by {
            return format!("superseded by {by}");
        }
        if let Some((reason, at)) = &self.recall {
            return match reason.as_str() {
                "" => format!("recalled {}", time(*at)),
                why => format!("recalled {}: {why}", time(*at)),
            };
        }
        match &self.purge_reason {
            Some(why) if why == "not collected" || why == "not acknowledged" => format!(
                "purged {} ({why}): chase the school",
                self.deleted_at.map(time).unwrap_or_default()
            ),
            Some(why) => format!("purged ({why})"),
            None => String::new(),
        }
    }
}

/// Whether a forwarding header comes from the trust's escrow, to a school,
/// signed by one of the escrow's pinned keys.
async fn forwarder_signed(
    home: &Home,
    clients: &mut crate::connect::Clients,
    pins: &mut Pins,
    forwarding: &SignedHeader,
) -> bool {
    let by = forwarding.header().from;
    if by != baton::Laestab::ESCROW || forwarding.header().to.is_escrow() {
        return false;
    }
    if refresh_once(home, clients, pins, &by).await.is_err() {
        return false;
    }
    pins.signed_by(&by, forwarding.header().sender_key_id, |k| {
        forwarding.verify(k).is_ok()
    })
}

/// This device's public key, as the directory lists it under its key id.
async fn this_device(
    clients: &mut crate::connect::Clients,
    config: &crate::home::Config,
) -> Option<baton::keys::PublicKey> {
    let school = clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: config.school.to_string(),
            peer: String::new(),
        })
        .await
        .ok()?
        .into_inner();
    school
        .keys
        .iter()
        .filter(|k| k.key_id == config.key_id)
        .find_map(|k| baton::keys::SchoolKey::try_from(k).ok())
        .map(|k| k.public)
}

/// A receipt verifies when it is signed by a key pinned for the destination
/// and states the ciphertext hash we sent.
async fn verify(
    home: &Home,
    clients: &mut crate::connect::Clients,
    pins: &mut Pins,
    h: &baton::pack::Header,
    r: &SignedReceipt,
) -> bool {
    if r.receipt().pack_id != h.pack_id || r.receipt().ciphertext_sha256 != h.ciphertext_sha256 {
        return false;
    }
    let try_verify = |pins: &Pins| {
        let signer = r.receipt().recipient_key_id;
        // A revoked key verifies no receipt made after its revocation.
        let after_revocation = pins
            .revoked_at(&h.to, signer)
            .is_some_and(|at| r.receipt().received_at_ms > at);
        !after_revocation
            && pins
                .verifying_keys(&h.to)
                .map(|keys| {
                    keys.iter()
                        .any(|k| k.key_id() == signer && r.verify(k).is_ok())
                })
                .unwrap_or(false)
    };
    // The destination's keys as listed now, once a run: a key revoked since
    // verifies no later receipt, and a new one is refused if it is a change
    // (then the keys confirmed before still verify what they signed).
    let _ = refresh_once(home, clients, pins, &h.to).await;
    try_verify(pins)
}

fn write_receipts(dir: &std::path::Path, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv =
        String::from("pack_id,to,kind,upn,name,sent_at,received_at,recipient_key_id,verified\n");
    for r in rows {
        let Some(receipt) = &r.receipt else { continue };
        let x = receipt.receipt();
        write_json(
            &dir.join(format!("{}.receipt.json", r.id)),
            &serde_json::json!({
                "pack_id": r.id, "to": r.to, "kind": r.kind, "upn": r.upn, "name": r.name,
                "ciphertext_sha256": hex::encode(x.ciphertext_sha256), "received_at": time(x.received_at_ms),
                "received_at_ms": x.received_at_ms, "recipient_key_id": x.recipient_key_id.to_string(),
                "signature": hex::encode(receipt.signature()), "verified": r.verified,
            }),
        )?;
        let fields = [
            r.id.clone(),
            r.to.clone(),
            r.kind.clone(),
            r.upn.clone(),
            r.name.clone(),
            time(r.sent_at),
            time(x.received_at_ms),
            x.recipient_key_id.to_string(),
            r.verified.to_string(),
        ];
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        csv.push_str(&quoted.join(","));
        csv.push('\n');
    }
    write_atomic(&dir.join("receipts.csv"), csv.as_bytes(), false)
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}
