//! The pages of `baton ui`. Each reads what the matching command reads,
//! through the same functions (`inbox::list`, `sent::collect`,
//! `check::gather`), and says the same things in a teacher's words; a
//! failure (the server down, keys changed) is shown on the page, not hidden.

use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::session::{Sessions, check_csrf};
use crate::commands::{check, inbox, sent};
use crate::home::Home;
use crate::output::{size, time};
use crate::pins::Pins;

/// What every page shares.
#[derive(Clone)]
pub struct Ctx {
    /// This school's home.
    pub home: Arc<Home>,
    /// Sessions and their CSRF tokens.
    pub sessions: Arc<Sessions>,
    /// Sends under way or done, by a random id.
    pub jobs: Arc<std::sync::Mutex<std::collections::HashMap<String, super::actions::Shared>>>,
}

impl Ctx {
    /// Whether this device's key holds the `dsl` role (it may send a
    /// child-protection file).
    fn is_dsl(&self) -> bool {
        let Ok(config) = self.home.config() else {
            return false;
        };
        Pins::load(&self.home).ok().is_some_and(|p| {
            p.get(&config.school).is_some_and(|s| {
                s.keys
                    .iter()
                    .any(|k| k.key_id == config.key_id && k.roles.contains(&baton::keys::Role::Dsl))
            })
        })
    }

    /// "Name (LAESTAB)" of this school, as pinned, or its number.
    fn school(&self) -> String {
        let Ok(config) = self.home.config() else {
            return "this school".into();
        };
        let name = Pins::load(&self.home)
            .ok()
            .and_then(|p| p.get(&config.school).map(|s| s.name.clone()))
            .filter(|n| !n.is_empty());
        match name {
            Some(name) => format!("{name} ({})", config.school),
            None => config.school.to_string(),
        }
    }
}

fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be drawn",
        )
            .into_response(),
    }
}

/// What a pack carries, in a teacher's words.
fn what(kind: baton::pack::Kind) -> &'static str {
    match kind {
        baton::pack::Kind::Transfer => "pupil record",
        baton::pack::Kind::Safeguarding => "child-protection file",
    }
}

/// A pack's state in a teacher's words.
fn plain(state: &str) -> String {
    match state {
        "pending" => "waiting to be collected".into(),
        "downloaded" => "collected, receipt not confirmed yet".into(),
        "acknowledged" => "receipt confirmed".into(),
        "readdressed" => "forwarded by the trust".into(),
        "superseded" => "replaced by a correction".into(),
        "recall_requested" => "recalled after it was collected".into(),
        "purged" => "removed from the server (kept no longer)".into(),
        other => other.replace('_', " "),
    }
}

/// A destination in a teacher's words (the escrow codes are not schools).
fn school_word(to: &str) -> String {
    match to {
        "XXXXXXX" => "held by the trust (next school not known)".into(),
        "MMMMMMM" => "held by the trust (independent school or abroad)".into(),
        other => other.to_string(),
    }
}

/// The stylesheet (served here: nothing comes from other hosts).
pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("templates/style.css"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "ui/home.html")]
struct HomePage {
    school: String,
    key: String,
    roles: String,
    server: String,
    problem: Option<String>,
    warnings: Vec<(String, String)>,
    waiting: usize,
    overdue_in: usize,
    sent: usize,
    overdue_out: usize,
}

/// `/`: this school and key holder, and what needs doing.
pub async fn home(State(ctx): State<Ctx>) -> Response {
    let school = ctx.school();
    let config = match ctx.home.config() {
        Ok(c) => c,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    };
    let mut page = HomePage {
        school,
        key: crate::pins::grouped_id(&config.key_id),
        roles: Pins::load(&ctx.home)
            .ok()
            .and_then(|p| {
                p.get(&config.school).and_then(|s| {
                    s.keys
                        .iter()
                        .find(|k| k.key_id == config.key_id)
                        .map(|k| baton::keys::role_names(&k.roles, ", "))
                })
            })
            .unwrap_or_else(|| "roles not known yet".into()),
        server: config.server.clone(),
        problem: None,
        warnings: Vec::new(),
        waiting: 0,
        overdue_in: 0,
        sent: 0,
        overdue_out: 0,
    };
    let counts = async {
        let mut clients = crate::connect::connect(&ctx.home).await?;
        let waiting = inbox::list(&mut clients).await?;
        let (rows, _) = sent::collect(&ctx.home).await?;
        let warnings = changed_keys(&ctx.home, &mut clients).await?;
        anyhow::Ok((waiting, rows, warnings))
    };
    match counts.await {
        Ok((waiting, rows, warnings)) => {
            page.warnings = warnings;
            page.waiting = waiting.iter().filter(|w| !w.withdrawn()).count();
            page.overdue_in = waiting.iter().filter(|w| w.overdue()).count();
            page.sent = rows.len();
            page.overdue_out = rows.iter().filter(|r| r.overdue()).count();
        }
        Err(e) => page.problem = Some(format!("{e:#}")),
    }
    render(&page)
}

/// The pinned schools whose keys the directory now lists otherwise (the
/// same comparison `send` makes), as (LAESTAB, name); the pins on disk are
/// not touched.
async fn changed_keys(
    home: &Home,
    clients: &mut crate::connect::Clients,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut pins = Pins::load(home)?;
    let mut changed = Vec::new();
    for laestab in pins.pinned() {
        let Ok(school) = clients
            .directory
            .get_school(baton::api::v1::GetSchoolRequest {
                laestab: laestab.to_string(),
            })
            .await
        else {
            continue;
        };
        let school = school.into_inner();
        if matches!(pins.check(&school), Ok(crate::pins::Check::Changed(_))) {
            changed.push((laestab.to_string(), school.name));
        }
    }
    Ok(changed)
}

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
    let out = super::actions::default_out(&ctx.home);
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
    let (summary, pulled, mut messages) = match super::actions::baton(&ctx.home, &args).await {
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
    match super::actions::baton(&ctx.home, &["ack", "--all-pulled", "--json"]).await {
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

/// One row of the sent page.
struct SentRow {
    pupil: String,
    to: String,
    what: String,
    state: String,
    due: String,
    overdue: bool,
    receipt: String,
}

#[derive(Template)]
#[template(path = "ui/sent.html")]
struct SentPage {
    school: String,
    problem: Option<String>,
    rows: Vec<SentRow>,
}

/// `/sent`: every pack this school sent, with its pupil and receipt.
pub async fn sent(State(ctx): State<Ctx>) -> Response {
    let mut page = SentPage {
        school: ctx.school(),
        problem: None,
        rows: Vec::new(),
    };
    match sent::collect(&ctx.home).await {
        Ok((rows, _)) => {
            page.rows = rows
                .iter()
                .map(|r| SentRow {
                    pupil: match (r.name.is_empty(), r.upn.is_empty()) {
                        (true, true) => "(no longer recorded here)".into(),
                        _ => format!("{} ({})", r.name, r.upn),
                    },
                    to: match &r.end.readdressed_to {
                        Some(to) => format!("{} → {to}", school_word(&r.to)),
                        None => school_word(&r.to),
                    },
                    what: r
                        .kind
                        .parse()
                        .map_or(String::new(), |k| what(k).to_string()),
                    state: plain(r.state),
                    due: r.due.map(baton::dates::format_ymd).unwrap_or_default(),
                    overdue: r.overdue(),
                    receipt: match (&r.receipt, r.verified) {
                        (None, _) => r.error.clone().unwrap_or_else(|| r.end.describe()),
                        (Some(x), true) => {
                            format!("confirmed {}", time(x.receipt().received_at_ms))
                        }
                        (Some(_), false) => "DOES NOT CHECK: ask the receiving school".into(),
                    },
                })
                .collect();
        }
        Err(e) => page.problem = Some(format!("{e:#}")),
    }
    render(&page)
}

/// One row of the schools page.
struct SchoolRow {
    laestab: String,
    name: String,
    phase: String,
    keys: usize,
    formerly: String,
}

#[derive(Template)]
#[template(path = "ui/schools.html")]
struct SchoolsPage {
    school: String,
    problem: Option<String>,
    rows: Vec<SchoolRow>,
}

/// `/schools`: the trust's directory.
pub async fn schools(State(ctx): State<Ctx>) -> Response {
    let mut page = SchoolsPage {
        school: ctx.school(),
        problem: None,
        rows: Vec::new(),
    };
    let listed = async {
        let mut clients = crate::connect::connect(&ctx.home).await?;
        let schools = clients
            .directory
            .list_schools(baton::api::v1::ListSchoolsRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}", crate::connect::explain(&s)))?
            .into_inner()
            .schools;
        anyhow::Ok(schools)
    };
    match listed.await {
        Ok(schools) => {
            page.rows = schools
                .into_iter()
                .map(|s| SchoolRow {
                    keys: s.keys.len(),
                    formerly: s.aliases.join(", "),
                    laestab: s.laestab,
                    name: s.name,
                    phase: s.phase,
                })
                .collect();
        }
        Err(e) => page.problem = Some(format!("{e:#}")),
    }
    render(&page)
}

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
    let job = super::actions::start(&ctx.home, args.iter().map(ToString::to_string).collect());
    let id = hex::encode(rand::random::<[u8; 16]>());
    let mut jobs = ctx
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A page open all term keeps only recent sends' results.
    if jobs.len() >= 64 {
        jobs.retain(|_, j| super::actions::lock(j).finished.is_none());
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
    let job = super::actions::lock(&job);
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

#[derive(Template)]
#[template(path = "ui/school.html")]
struct SchoolPage {
    school: String,
    csrf: String,
    laestab: String,
    name: String,
    pin: String,
    changes: Vec<String>,
    keys: Vec<(String, String, String, String, String)>,
    problem: Option<String>,
    done: Option<String>,
}

/// `/schools/{laestab}`: one school's keys, as `baton schools show`
/// compares them with the pins, and the confirm step when they changed.
pub async fn school(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    axum::extract::Path(laestab): axum::extract::Path<String>,
) -> Response {
    render(&school_page(&ctx, &headers, &laestab, None).await)
}

async fn school_page(
    ctx: &Ctx,
    headers: &HeaderMap,
    laestab: &str,
    done: Option<String>,
) -> SchoolPage {
    let mut page = SchoolPage {
        school: ctx.school(),
        csrf: ctx.sessions.csrf(headers).unwrap_or_default(),
        laestab: laestab.to_string(),
        name: String::new(),
        pin: String::new(),
        changes: Vec::new(),
        keys: Vec::new(),
        problem: None,
        done,
    };
    let Ok(number) = laestab.parse::<baton::Laestab>() else {
        page.problem = Some(format!("{laestab:?} is not a school's number"));
        return page;
    };
    let number = number.to_string();
    match super::actions::baton(&ctx.home, &["schools", "show", &number, "--json"]).await {
        Ok(ran) if ran.ok => {
            let j = &ran.json;
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            page.name = text(&j["name"]);
            page.pin = text(&j["pin"]);
            page.changes = j["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            page.keys = j["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    let roles: Vec<String> = k["roles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    (
                        crate::pins::grouped_id(&text(&k["id"])),
                        text(&k["label"]),
                        roles.join(", "),
                        if k["active"] == true {
                            "yes"
                        } else {
                            "no (revoked)"
                        }
                        .to_string(),
                        text(&k["pin"]),
                    )
                })
                .collect();
        }
        Ok(ran) => page.problem = Some(ran.messages.join(" ")),
        Err(e) => page.problem = Some(format!("{e:#}")),
    }
    page
}

/// The confirm form's fields.
#[derive(serde::Deserialize)]
pub struct TrustForm {
    csrf: String,
    laestab: String,
}

/// `POST /schools/trust`: `baton schools trust`, after the user said they
/// compared the fingerprints with the school.
pub async fn school_trust(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<TrustForm>,
) -> Response {
    if let Some(refused) = check_csrf(&ctx.sessions, &headers, &form.csrf) {
        return refused;
    }
    let Ok(number) = form.laestab.parse::<baton::Laestab>() else {
        return (StatusCode::BAD_REQUEST, "not a school's number").into_response();
    };
    let number = number.to_string();
    let done = match super::actions::baton(&ctx.home, &["schools", "trust", &number]).await {
        Ok(ran) if ran.ok => format!("This computer now trusts the keys {number} has today."),
        Ok(ran) => format!("Not trusted: {}", ran.messages.join(" ")),
        Err(e) => format!("Not trusted: {e:#}"),
    };
    render(&school_page(&ctx, &headers, &number, Some(done)).await)
}

/// `/sent/receipts.csv`: every receipt as `baton sent --receipts` files it
/// (the CSV of pupils, schools, times and whether each receipt verifies).
pub async fn receipts_csv(State(ctx): State<Ctx>) -> Response {
    let Ok(dir) = tempfile::tempdir() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no room for the receipts",
        )
            .into_response();
    };
    let folder = dir.path().display().to_string();
    let ran = super::actions::baton(&ctx.home, &["sent", "--receipts", &folder, "--json"]).await;
    match (ran, std::fs::read(dir.path().join("receipts.csv"))) {
        (Ok(ran), Ok(csv)) if ran.ok => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"receipts.csv\"",
                ),
            ],
            csv,
        )
            .into_response(),
        (Ok(ran), _) => (StatusCode::BAD_GATEWAY, ran.messages.join(" ")).into_response(),
        (Err(e), _) => (StatusCode::BAD_GATEWAY, format!("{e:#}")).into_response(),
    }
}
