//! `/inbox`: what is waiting for this school, and collecting it (pull,
//! then acknowledge) into folders the user chooses.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::{Ctx, plain, render, what};
use crate::commands::inbox;
use crate::output::{size, time};
use crate::pins::Pins;
use crate::ui::session::check_csrf;

/// One row of the received page.
struct InboxRow {
    id: String,
    withdrawn: bool,
    from: String,
    what: &'static str,
    size: String,
    sent: String,
    state: String,
    due: String,
    overdue: bool,
}

#[derive(Template)]
#[template(path = "ui/inbox.html")]
struct InboxPage {
    school: String,
    csrf: String,
    out: String,
    ctf: String,
    problem: Option<String>,
    notices: Vec<String>,
    rows: Vec<InboxRow>,
    pulled_done: bool,
    summary: String,
    pulled: Vec<(String, String, String)>,
    messages: Vec<String>,
}

/// `/inbox`: what is waiting for this school, overdue first.
pub async fn inbox(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    render(&inbox_page(&ctx, &headers).await)
}

async fn inbox_page(ctx: &Ctx, headers: &HeaderMap) -> InboxPage {
    let out = crate::ui::actions::default_out(&ctx.home);
    let mut page = InboxPage {
        school: ctx.school(),
        csrf: ctx.sessions.csrf(headers).unwrap_or_default(),
        ctf: format!("{out}-for-mis"),
        out,
        problem: None,
        notices: Vec::new(),
        rows: Vec::new(),
        pulled_done: false,
        summary: String::new(),
        pulled: Vec::new(),
        messages: Vec::new(),
    };
    let listed = async {
        let mut clients = crate::connect::connect(&ctx.home).await?;
        let mut waiting = inbox::list(&mut clients).await?;
        let mut pins = Pins::load(&ctx.home)?;
        inbox::check_notices(&ctx.home, &mut clients, &mut pins, &mut waiting).await;
        anyhow::Ok(waiting)
    };
    match listed.await {
        Ok(mut waiting) => {
            waiting.sort_by_key(|w| (!w.overdue(), w.overdue().then_some(w.due).flatten()));
            page.notices = waiting
                .iter()
                .filter(|w| w.withdrawn())
                .map(inbox::notice_line)
                .collect();
            page.rows = waiting
                .iter()
                .map(|w| {
                    let h = w.header.header();
                    InboxRow {
                        id: h.pack_id.to_string(),
                        withdrawn: w.withdrawn(),
                        from: match w.via() {
                            Some(via) => format!("{} (forwarded by {via})", w.author()),
                            None => h.from.to_string(),
                        },
                        what: what(h.kind),
                        size: size(h.ciphertext_len),
                        sent: time(w.uploaded_at_ms),
                        state: plain(w.shown_state()),
                        due: w.due.map(baton::dates::format_ymd).unwrap_or_default(),
                        overdue: w.overdue(),
                    }
                })
                .collect();
        }
        Err(e) => page.problem = Some(format!("{e:#}")),
    }
    page
}

/// `POST /inbox/pull`: `baton pull` (the ticked packs, `pack_ID`, or all)
/// into the chosen folders, then `baton ack --all-pulled`; the page says
/// what each did.
pub async fn inbox_pull(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    if let Some(refused) = check_csrf(&ctx.sessions, &headers, &field("csrf")) {
        return refused;
    }
    let (out, ctf) = (field("out"), field("ctf"));
    let mut ticked: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("pack_"))
        .filter(|id| id.parse::<baton::pack::PackId>().is_ok())
        .map(str::to_string)
        .collect();
    ticked.sort();
    let mut args = vec!["pull", "--json", "--out", out.as_str()];
    if !ctf.is_empty() {
        args.extend(["--ctf-dir", ctf.as_str()]);
    }
    if ticked.is_empty() {
        args.push("--all");
    } else {
        args.extend(ticked.iter().map(String::as_str));
    }
    let (summary, pulled, mut messages) = match crate::ui::actions::baton(&ctx.home, &args).await {
        Ok(ran) => {
            let rows: Vec<(String, String, String)> = ran
                .json
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    let text = |k: &str| o[k].as_str().unwrap_or_default().to_string();
                    let result = match text("state").as_str() {
                        "pulled" => "saved".to_string(),
                        "already-pulled" => "saved before".to_string(),
                        _ => format!("not saved: {}", text("error")),
                    };
                    (text("from"), result, text("folder"))
                })
                .collect();
            let summary = if ran.ok {
                format!("{} record(s) collected.", rows.len())
            } else {
                "Some records could not be collected (see below).".to_string()
            };
            (summary, rows, ran.messages)
        }
        Err(e) => (format!("{e:#}"), Vec::new(), Vec::new()),
    };
    // Receipts for what was saved (and anything saved before, not yet confirmed).
    match crate::ui::actions::baton(&ctx.home, &["ack", "--all-pulled", "--json"]).await {
        Ok(ran) => {
            let confirmed = ran.json.as_array().map_or(0, Vec::len);
            messages.push(format!(
                "Receipt confirmed to the sending school for {confirmed} record(s)."
            ));
            messages.extend(ran.messages);
        }
        Err(e) => messages.push(format!("{e:#}")),
    }
    let mut page = inbox_page(&ctx, &headers).await;
    page.pulled_done = true;
    page.summary = summary;
    page.pulled = pulled;
    page.messages = messages;
    render(&page)
}
