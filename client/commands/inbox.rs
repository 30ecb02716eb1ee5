//! `baton inbox`: the packs waiting for this school.

use anyhow::Result;
use baton::api::v1;
use baton::pack::{PackId, SignedHeader, SignedRecall};

use crate::connect::{Clients, explain};
use crate::home::Home;
use crate::output::{json, size, table, time};
use crate::pins::{Pins, refresh_once};

/// List packs waiting for this school.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One inbox entry, checked.
pub struct Waiting {
    /// The header.
    pub header: SignedHeader,
    /// When it was stored on the server.
    pub uploaded_at_ms: i64,
    /// pending or downloaded.
    pub state: &'static str,
    /// When it is due (from the trust's calendar), if known.
    pub due: Option<time::Date>,
    /// The sender's recall, when it withdrew the pack after it was
    /// downloaded (not yet checked: see [`check_notices`]).
    pub recall: Option<SignedRecall>,
    /// The pack that corrects this one, as the server says.
    pub superseded_by: Option<PackId>,
    /// Whether the withdrawal verified against the sender's pinned keys
    /// ([`check_notices`]); `None` for a supersede whose correcting pack is
    /// no longer listed (recalled or purged since), so cannot be checked.
    pub notice_verified: Option<bool>,
}

impl Waiting {
    /// Who wrote it: the sender, or for a pack the escrow forwarded, the
    /// original sender (checked when it is pulled).
    pub fn author(&self) -> baton::Laestab {
        let h = self.header.header();
        h.forwarded
            .as_ref()
            .map_or(h.from, |f| f.original.header().from)
    }

    /// The escrow that forwarded it, if it did.
    pub fn via(&self) -> Option<baton::Laestab> {
        let h = self.header.header();
        h.forwarded.as_ref().map(|_| h.from)
    }

    /// Past its due date (nothing in the inbox is acknowledged yet; a
    /// withdrawn pack is due no more).
    pub fn overdue(&self) -> bool {
        !self.withdrawn() && crate::clock::overdue(self.due, false)
    }

    /// The sender withdrew it after it was downloaded: listed as a notice,
    /// it cannot be downloaded again.
    pub fn withdrawn(&self) -> bool {
        self.recall.is_some() || self.superseded_by.is_some()
    }

    /// The state as the table and JSON show it.
    pub fn shown_state(&self) -> &'static str {
        match (self.withdrawn(), self.notice_verified, self.superseded_by) {
            (false, ..) => self.state,
            (true, None, _) => "superseded, not checked",
            (true, Some(false), _) => "withdrawal does not verify",
            (true, Some(true), Some(_)) => "superseded",
            (true, Some(true), None) => "recalled",
        }
    }
}

/// Checks each withdrawal notice: a recall must be signed by one of the
/// sender's pinned keys and name the pack and its ciphertext; a supersede
/// must be named by a pack in the same listing whose header the sender
/// signed. The server can delete a pack, but cannot make up either.
pub async fn check_notices(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    waiting: &mut [Waiting],
) {
    let mut verdicts = Vec::with_capacity(waiting.len());
    for w in waiting.iter() {
        let ok = if let Some(by) = w.superseded_by {
            let from = w.header.header().from;
            match waiting.iter().find(|n| n.header.header().pack_id == by) {
                // Recalled or purged since: nothing left to check it by.
                None => None,
                Some(newer) => Some(
                    newer.header.header().supersedes == Some(w.header.header().pack_id)
                        && newer.header.header().from == from
                        && refresh_once(home, clients, pins, &from).await.is_ok()
                        && pins.signed_by(&from, newer.header.header().sender_key_id, |k| {
                            newer.header.verify(k).is_ok()
                        }),
                ),
            }
        } else if let Some(recall) = &w.recall {
            Some(crate::commands::recall::verified(home, clients, pins, &w.header, recall).await)
        } else {
            Some(false)
        };
        verdicts.push(ok);
    }
    for (w, ok) in waiting.iter_mut().zip(verdicts) {
        w.notice_verified = ok;
    }
}

/// Every page of the inbox.
pub async fn list(clients: &mut Clients) -> Result<Vec<Waiting>> {
    Ok(listing(clients).await?.0)
}

/// [`list`], and whether the trust has no calendar.
async fn listing(clients: &mut Clients) -> Result<(Vec<Waiting>, bool)> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = clients
            .exchange
            .inbox(v1::InboxRequest {
                page_size: 500,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("listing the inbox: {}", explain(&s)))?
            .into_inner();
        for entry in page.packs {
            let wire = entry.header.unwrap_or_default();
            let header = SignedHeader::try_from(&wire)
                .map_err(|e| anyhow::anyhow!("the server sent a malformed header: {e}"))?;
            let state = if entry.state == v1::PackState::Downloaded as i32 {
                "downloaded"
            } else {
                "pending"
            };
            out.push(Waiting {
                header,
                uploaded_at_ms: entry.uploaded_at_ms,
                state,
                due: crate::clock::parse_due(&entry.due),
                recall: entry
                    .recall
                    .as_ref()
                    .and_then(|r| SignedRecall::try_from(r).ok()),
                superseded_by: entry.superseded_by.parse().ok(),
                notice_verified: Some(false),
            });
        }
        if page.next_page_token.is_empty() {
            return Ok((out, page.no_calendar));
        }
        page_token = page.next_page_token;
    }
}

/// Runs `baton inbox`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let mut clients = crate::connect::connect(home).await?;
    let (mut waiting, no_calendar) = listing(&mut clients).await?;
    let mut pins = Pins::load(home)?;
    check_notices(home, &mut clients, &mut pins, &mut waiting).await;
    // What is overdue first, the longest overdue at the top.
    waiting.sort_by_key(|w| (!w.overdue(), w.overdue().then_some(w.due).flatten()));
    if args.json {
        let items: Vec<_> = waiting
            .iter()
            .map(|w| {
                let h = w.header.header();
                serde_json::json!({"id": h.pack_id.to_string(), "from": w.author().to_string(),
                    "via": w.via().map(|v| v.to_string()), "to": h.to.to_string(),
                    "kind": h.kind.as_str(), "size": h.ciphertext_len, "sent_at": time(w.uploaded_at_ms), "state": w.shown_state(),
                    "left": h.left_on.map(baton::dates::format_ymd), "due": w.due.map(baton::dates::format_ymd),
                    "overdue": w.overdue(), "supersedes": h.supersedes.map(|id| id.to_string()),
                    "recalled": w.recall.is_some() && w.notice_verified == Some(true),
                    "recall_reason": w.recall.as_ref().filter(|_| w.notice_verified == Some(true))
                        .map(|r| r.recall().reason.clone()),
                    "recalled_at": w.recall.as_ref().filter(|_| w.notice_verified == Some(true))
                        .map(|r| time(r.recall().recalled_at_ms)),
                    "superseded_by": w.superseded_by.map(|id| id.to_string()),
                    "withdrawal_verified": w.withdrawn().then_some(w.notice_verified).flatten()})
            })
            .collect();
        json(&serde_json::Value::Array(items));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = waiting
        .iter()
        .map(|w| {
            let h = w.header.header();
            vec![
                h.pack_id.to_string(),
                match w.via() {
                    Some(via) => format!("{} via {via}", w.author()),
                    None => h.from.to_string(),
                },
                h.kind.to_string(),
                size(h.ciphertext_len),
                time(w.uploaded_at_ms),
                w.shown_state().to_string(),
                match (w.due, w.overdue()) {
                    (Some(d), true) => format!("{} OVERDUE", baton::dates::format_ymd(d)),
                    (Some(d), false) => baton::dates::format_ymd(d),
                    (None, _) => String::new(),
                },
            ]
        })
        .collect();
    table(
        &["ID", "FROM", "KIND", "SIZE", "SENT AT", "STATE", "DUE"],
        &rows,
    );
    if rows.is_empty() {
        eprintln!("nothing waiting");
    }
    for w in waiting.iter().filter(|w| w.withdrawn()) {
        eprintln!("{}", notice_line(w));
    }
    if let Some(line) =
        crate::clock::overdue_line(waiting.iter().filter(|w| w.overdue()).filter_map(|w| w.due))
    {
        eprintln!("{line}");
    }
    if no_calendar && waiting.iter().any(|w| w.due.is_some()) {
        eprintln!("{}", crate::clock::NO_CALENDAR);
    }
    Ok(())
}

/// The loud line for a withdrawn pack this school had downloaded.
pub fn notice_line(w: &Waiting) -> String {
    let h = w.header.header();
    match (w.notice_verified, w.superseded_by) {
        (None, Some(by)) => {
            return format!(
                "NOTICE: the server says {} replaced pack {} with pack {by}, which is no longer listed (recalled or purged since), so the link cannot be checked: ask {} which record stands.",
                h.from, h.pack_id, h.from
            );
        }
        (Some(true), _) => {}
        _ => {
            return format!(
                "WARNING: the server says {} withdrew pack {}, but that does not verify against {}'s keys: ask {} before acting on it.",
                h.from, h.pack_id, h.from, h.from
            );
        }
    }
    match (&w.recall, w.superseded_by) {
        (_, Some(by)) => format!(
            "NOTICE: {} replaced pack {} with pack {by} (a correction): pull {by}, and set the old pack's folder aside.",
            h.from, h.pack_id
        ),
        (Some(r), None) => {
            let reason = match r.recall().reason.as_str() {
                "" => String::new(),
                why => format!(" (\"{why}\")"),
            };
            format!(
                "RECALLED: {} recalled pack {} on {}{reason}: it was sent in error; set the pupil folder you pulled aside and follow your school's procedure for records received in error.",
                h.from,
                h.pack_id,
                time(r.recall().recalled_at_ms)
            )
        }
        (None, None) => String::new(),
    }
}
