//! `/sent`: every pack this school sent, with its pupil and receipt, and
//! the receipts as a CSV file.

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Ctx, plain, render, school_word, what};
use crate::commands::sent;
use crate::output::time;

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
    let ran =
        crate::ui::actions::baton(&ctx.home, &["sent", "--receipts", &folder, "--json"]).await;
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
