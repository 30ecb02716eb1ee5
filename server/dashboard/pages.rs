//! The dashboard's pages, each read from the store when it is opened:
//! the overview (packs by state, overdue count, retention, the
//! certificate), schools, deliveries per pair of schools, the overdue list
//! and the recent audit log. Metadata only.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use baton::Laestab;
use baton::keys::Role;

use super::Dashboard;
use crate::admin::report::{Counts, count};
use crate::clocks::Clocks;
use crate::store::{PackStatus, Store, StoredPack, now_ms};

/// How many audit entries the audit page shows.
const AUDIT_ENTRIES: u32 = 200;

/// The pages, for the signed-in.
pub fn router<S: Store>() -> axum::Router<Arc<Dashboard<S>>> {
    axum::Router::new()
        .route("/", axum::routing::get(overview::<S>))
        .route("/schools", axum::routing::get(schools::<S>))
        .route("/deliveries", axum::routing::get(deliveries::<S>))
        .route("/overdue", axum::routing::get(overdue::<S>))
        .route("/audit", axum::routing::get(audit::<S>))
        .route("/style.css", axum::routing::get(style))
}

/// The stylesheet (served here: the policy allows no other host).
async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../templates/dashboard/style.css"),
    )
        .into_response()
}

/// Renders a page, or answers 503 naming nothing internal.
fn render(page: anyhow::Result<impl Template>) -> Response {
    match page.and_then(|p| Ok(p.render()?)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "dashboard: a page failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The page could not be read from storage; try again.",
            )
                .into_response()
        }
    }
}

/// A time in milliseconds as a date and time in England.
fn when(ms: i64) -> String {
    baton::dates::england_datetime(ms)
}

/// Bytes as a short figure.
fn size(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes == 0 {
        "0".into()
    } else if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / MB)
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}

/// What the top of every page shows.
struct Frame {
    generated: String,
    current: &'static str,
}

impl Frame {
    fn new(current: &'static str) -> Self {
        Self {
            generated: when(now_ms()),
            current,
        }
    }
}

/// One state's row.
struct StateRow {
    state: &'static str,
    packs: u64,
    held: String,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct Overview {
    frame: Frame,
    schools: usize,
    states: Vec<StateRow>,
    total_packs: u64,
    total_held: String,
    overdue: usize,
    acknowledged_days: u32,
    unacknowledged_days: u32,
    purge_due: usize,
    certificate_until: String,
    no_calendar: bool,
}

async fn overview<S: Store>(State(dash): State<Arc<Dashboard<S>>>) -> Response {
    render(
        async {
            let store = &dash.app.store;
            let totals = store.totals().await?;
            let states: Vec<StateRow> = PackStatus::ALL
                .iter()
                .map(|s| {
                    let t = totals.iter().find(|t| t.status == *s);
                    StateRow {
                        state: s.as_str(),
                        packs: t.map_or(0, |t| t.packs),
                        held: size(t.map_or(0, |t| t.bytes)),
                    }
                })
                .collect();
            let retention = dash.app.retention;
            Ok(Overview {
                frame: Frame::new("overview"),
                schools: store.list_schools().await?.len(),
                total_packs: totals.iter().map(|t| t.packs).sum(),
                total_held: size(totals.iter().map(|t| t.bytes).sum()),
                states,
                overdue: crate::clocks::overdue::overdue(store).await?.len(),
                acknowledged_days: retention.acknowledged_days,
                unacknowledged_days: retention.unacknowledged_days,
                purge_due: store
                    .purge_candidates(retention.cutoffs(now_ms()))
                    .await?
                    .len(),
                certificate_until: dash
                    .certs
                    .not_after()
                    .map_or_else(|| "unknown".into(), |t| when(t * 1000)),
                no_calendar: !Clocks::load(store).await?.has_default(),
            })
        }
        .await,
    )
}

/// One school's row.
struct SchoolRow {
    laestab: String,
    name: String,
    phase: String,
    aliases: String,
    keys: usize,
    dsl: usize,
    staff: usize,
    revoked: usize,
    enrolled: String,
    last_activity: String,
}

#[derive(Template)]
#[template(path = "dashboard/schools.html")]
struct Schools {
    frame: Frame,
    rows: Vec<SchoolRow>,
}

/// Every pack's metadata (the dashboard's reading of the whole store).
async fn all_packs<S: Store>(store: &S) -> anyhow::Result<Vec<StoredPack>> {
    Ok(store.stored_between(0, i64::MAX).await?)
}

async fn schools<S: Store>(State(dash): State<Arc<Dashboard<S>>>) -> Response {
    render(
        async {
            let store = &dash.app.store;
            let mut last: BTreeMap<Laestab, i64> = BTreeMap::new();
            for p in all_packs(store).await? {
                let mut seen = |school: Laestab, at: Option<i64>| {
                    if let Some(at) = at {
                        let e = last.entry(school).or_insert(at);
                        *e = (*e).max(at);
                    }
                };
                seen(p.from, Some(p.uploaded_at_ms));
                seen(p.to, p.downloaded_at_ms);
                seen(p.to, p.acknowledged_at_ms);
            }
            let rows = store
                .list_schools()
                .await?
                .into_iter()
                .map(|s| {
                    let active: Vec<_> = s
                        .keys
                        .iter()
                        .filter(|k| k.revoked_at_ms.is_none())
                        .collect();
                    let with = |r: Role| active.iter().filter(|k| k.roles.contains(&r)).count();
                    SchoolRow {
                        laestab: s.info.laestab.to_string(),
                        name: s.info.name.clone(),
                        phase: s.info.phase.clone(),
                        aliases: s
                            .aliases
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        keys: active.len(),
                        dsl: with(Role::Dsl),
                        staff: with(Role::Staff),
                        revoked: s.keys.len() - active.len(),
                        enrolled: when(s.created_at_ms),
                        last_activity: last
                            .get(&s.info.laestab)
                            .map_or_else(|| "none yet".into(), |t| when(*t)),
                    }
                })
                .collect();
            Ok(Schools {
                frame: Frame::new("schools"),
                rows,
            })
        }
        .await,
    )
}

/// One pair's row.
struct PairRow {
    from: String,
    from_name: String,
    to: String,
    to_name: String,
    sent: u64,
    pending: u64,
    downloaded: u64,
    acknowledged: u64,
    overdue: u64,
    on_time: String,
}

/// Counts of a pair of schools.
#[derive(Default)]
struct Pair {
    counts: Counts,
    pending: u64,
    downloaded: u64,
}

#[derive(Template)]
#[template(path = "dashboard/deliveries.html")]
struct Deliveries {
    frame: Frame,
    rows: Vec<PairRow>,
    no_calendar: bool,
}

/// School names by number.
async fn names<S: Store>(store: &S) -> anyhow::Result<BTreeMap<Laestab, String>> {
    Ok(store
        .list_schools()
        .await?
        .into_iter()
        .map(|s| (s.info.laestab, s.info.name))
        .collect())
}

async fn deliveries<S: Store>(State(dash): State<Arc<Dashboard<S>>>) -> Response {
    render(
        async {
            let store = &dash.app.store;
            let clocks = Clocks::load(store).await?;
            let today = baton::dates::england_today();
            let mut pairs: BTreeMap<(Laestab, Laestab), Pair> = BTreeMap::new();
            for p in all_packs(store).await? {
                let (_, c) = count(&clocks, today, &p)?;
                let pair = pairs.entry((p.from, p.to)).or_default();
                pair.counts.add(&c);
                match p.status {
                    PackStatus::Pending => pair.pending += 1,
                    PackStatus::Downloaded => pair.downloaded += 1,
                    _ => {}
                }
            }
            let names = names(store).await?;
            let name = |l: &Laestab| names.get(l).cloned().unwrap_or_default();
            let rows = pairs
                .into_iter()
                .map(|((from, to), p)| {
                    let c = &p.counts;
                    // Of the packs whose clock has run out or stopped: how
                    // many were acknowledged by their due date.
                    let judged = c.acknowledged + c.overdue;
                    PairRow {
                        from: from.to_string(),
                        from_name: name(&from),
                        to: to.to_string(),
                        to_name: name(&to),
                        sent: c.sent,
                        pending: p.pending,
                        downloaded: p.downloaded,
                        acknowledged: c.acknowledged,
                        overdue: c.overdue,
                        on_time: if judged == 0 {
                            "-".into()
                        } else {
                            format!("{:.0}%", 100.0 * c.on_time as f64 / judged as f64)
                        },
                    }
                })
                .collect();
            Ok(Deliveries {
                frame: Frame::new("deliveries"),
                rows,
                no_calendar: !clocks.has_default(),
            })
        }
        .await,
    )
}

/// One overdue pack's row.
struct OverdueRow {
    pack: String,
    from: String,
    from_name: String,
    to: String,
    to_name: String,
    kind: &'static str,
    state: &'static str,
    sent: String,
    due: String,
}

#[derive(Template)]
#[template(path = "dashboard/overdue.html")]
struct Overdue {
    frame: Frame,
    rows: Vec<OverdueRow>,
}

async fn overdue<S: Store>(State(dash): State<Arc<Dashboard<S>>>) -> Response {
    render(
        async {
            let store = &dash.app.store;
            let names = names(store).await?;
            let name = |l: &Laestab| names.get(l).cloned().unwrap_or_default();
            let rows = crate::clocks::overdue::overdue(store)
                .await?
                .into_iter()
                .map(|o| OverdueRow {
                    pack: o.header.pack_id.clone(),
                    from: o.pack.from.to_string(),
                    from_name: name(&o.pack.from),
                    to: o.pack.to.to_string(),
                    to_name: name(&o.pack.to),
                    kind: crate::services::wire::kind_of(&o.header).as_str(),
                    state: o.pack.status.as_str(),
                    sent: when(o.pack.uploaded_at_ms),
                    due: baton::dates::format_ymd(o.due),
                })
                .collect();
            Ok(Overdue {
                frame: Frame::new("overdue"),
                rows,
            })
        }
        .await,
    )
}

/// One audit entry's row.
struct AuditRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    subject: String,
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct Audit {
    frame: Frame,
    rows: Vec<AuditRow>,
    limit: u32,
}

async fn audit<S: Store>(State(dash): State<Arc<Dashboard<S>>>) -> Response {
    render(
        async {
            let rows = dash
                .app
                .store
                .recent_audit(AUDIT_ENTRIES)
                .await?
                .into_iter()
                .map(|e| AuditRow {
                    seq: e.seq,
                    at: when(e.at_ms),
                    actor: e.actor,
                    action: e.action,
                    subject: e.subject,
                })
                .collect();
            Ok(Audit {
                frame: Frame::new("audit"),
                rows,
                limit: AUDIT_ENTRIES,
            })
        }
        .await,
    )
}
