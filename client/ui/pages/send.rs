//! `/send`: check a CTF, spreadsheet or pupil folder, then send it, with
//! the send's progress and its result per pupil.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::path::PathBuf;

use super::{Ctx, render, school_word};
use crate::commands::check;
use crate::ui::session::check_csrf;

#[derive(Template)]
#[template(path = "ui/send.html")]
struct SendPage {
    school: String,
    csrf: String,
    dsl: bool,
    path: String,
    attachments: String,
    to: String,
    kind: String,
    checked: bool,
    ok: usize,
    problems: Vec<String>,
    unaddressed: Vec<String>,
    sent_done: bool,
    progress: Option<(usize, usize)>,
    summary: String,
    results: Vec<(String, String, String)>,
    messages: Vec<String>,
}

impl SendPage {
    fn new(ctx: &Ctx, headers: &HeaderMap) -> Self {
        Self {
            school: ctx.school(),
            csrf: ctx.sessions.csrf(headers).unwrap_or_default(),
            dsl: ctx.is_dsl(),
            path: String::new(),
            attachments: String::new(),
            to: String::new(),
            kind: "transfer".into(),
            checked: false,
            ok: 0,
            problems: Vec::new(),
            unaddressed: Vec::new(),
            sent_done: false,
            progress: None,
            summary: String::new(),
            results: Vec::new(),
            messages: Vec::new(),
        }
    }

    fn keep(&mut self, form: &SendForm) {
        self.path.clone_from(&form.path);
        self.attachments.clone_from(&form.attachments);
        self.to.clone_from(&form.to);
        self.kind.clone_from(&form.kind);
    }
}

/// `/send`: the form.
pub async fn send(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    render(&SendPage::new(&ctx, &headers))
}

/// The send form's fields.
#[derive(serde::Deserialize)]
pub struct SendForm {
    csrf: String,
    path: String,
    #[serde(default)]
    attachments: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    kind: String,
}

/// `POST /send/check`: what `baton check` says of a file or folder.
pub async fn send_check(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<SendForm>,
) -> Response {
    if let Some(refused) = check_csrf(&ctx.sessions, &headers, &form.csrf) {
        return refused;
    }
    let mut page = SendPage::new(&ctx, &headers);
    page.keep(&form);
    page.checked = true;
    let path = PathBuf::from(form.path.trim());
    let attachments = Some(form.attachments.trim())
        .filter(|a| !a.is_empty())
        .map(PathBuf::from);
    match check::gather(
        Some(&ctx.home),
        std::slice::from_ref(&path),
        attachments.as_deref(),
        false,
    )
    .await
    {
        Ok((gathered, _)) => {
            page.ok = gathered.items.len();
            page.problems = gathered.problems;
            page.unaddressed = gathered.unaddressed;
        }
        Err(e) => page.problems = vec![format!("{e:#}")],
    }
    render(&page)
}

/// `POST /send/go`: starts `baton send` for the file or folder (nothing is
/// sent if anything is invalid, as on the command line) and shows its
/// progress page.
pub async fn send_go(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<SendForm>,
) -> Response {
    if let Some(refused) = check_csrf(&ctx.sessions, &headers, &form.csrf) {
        return refused;
    }
    let path = form.path.trim();
    let kind = if form.kind == "safeguarding" {
        "safeguarding"
    } else {
        "transfer"
    };
    let mut args = vec!["send", "--json", "--kind", kind];
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".xml") {
        args.extend(["--ctf", path]);
    } else if lower.ends_with(".csv") {
        args.extend(["--csv", path]);
    } else {
        if !form.to.trim().is_empty() {
            args.extend(["--to", form.to.trim()]);
        }
        args.push(path);
    }
    if !form.attachments.trim().is_empty() {
        args.extend(["--attachments", form.attachments.trim()]);
    }
    let job = crate::ui::actions::start(&ctx.home, args.iter().map(ToString::to_string).collect());
    let id = hex::encode(rand::random::<[u8; 16]>());
    let mut jobs = ctx
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A page open all term keeps only recent sends' results.
    if jobs.len() >= 64 {
        jobs.retain(|_, j| crate::ui::actions::lock(j).finished.is_none());
    }
    jobs.insert(id.clone(), job);
    drop(jobs);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/send/job/{id}"))],
    )
        .into_response()
}

/// `/send/job/{id}`: a send's progress, then its result per pupil.
pub async fn send_job(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let job = ctx
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
        .cloned();
    let Some(job) = job else {
        return (StatusCode::NOT_FOUND, "no such send on this page").into_response();
    };
    let mut page = SendPage::new(&ctx, &headers);
    let job = crate::ui::actions::lock(&job);
    let Some(ran) = &job.finished else {
        page.progress = Some((job.done, job.total));
        return render(&page);
    };
    page.sent_done = true;
    let j = &ran.json;
    page.summary = if j.is_null() {
        "Nothing was sent.".to_string()
    } else {
        format!(
            "Sent {}, sent before {}, not sent {}, failed {}.",
            j["sent"], j["already_sent"], j["not_sent"], j["failed"]
        )
    };
    page.results = j["packs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            let result = match text("state").as_str() {
                "sent" => "sent".to_string(),
                "already-sent" => "sent before".to_string(),
                other => format!("{}: {}", other.replace('-', " "), text("error")),
            };
            (text("source"), school_word(&text("to")), result)
        })
        .collect();
    page.messages.clone_from(&ran.messages);
    render(&page)
}
