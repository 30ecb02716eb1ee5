//! `baton inbox`: the packs waiting for this school.

use anyhow::Result;
use baton::api::v1;
use baton::pack::SignedHeader;

use crate::connect::{Clients, explain};
use crate::home::Home;
use crate::output::{json, size, table, time};

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
}

impl Waiting {
    /// Past its due date (nothing in the inbox is acknowledged yet).
    pub fn overdue(&self) -> bool {
        crate::clock::overdue(self.due, false)
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
    // What is overdue first, the longest overdue at the top.
    waiting.sort_by_key(|w| (!w.overdue(), w.overdue().then_some(w.due).flatten()));
    if args.json {
        let items: Vec<_> = waiting
            .iter()
            .map(|w| {
                let h = w.header.header();
                serde_json::json!({"id": h.pack_id.to_string(), "from": h.from.to_string(), "to": h.to.to_string(),
                    "kind": h.kind.as_str(), "size": h.ciphertext_len, "sent_at": time(w.uploaded_at_ms), "state": w.state,
                    "left": h.left_on.map(baton::dates::format_ymd), "due": w.due.map(baton::dates::format_ymd),
                    "overdue": w.overdue()})
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
                h.from.to_string(),
                h.kind.to_string(),
                size(h.ciphertext_len),
                time(w.uploaded_at_ms),
                w.state.to_string(),
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
