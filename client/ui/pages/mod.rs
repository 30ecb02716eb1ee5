//! The pages of `baton ui`, one module each. Each reads what the matching
//! command reads, through the same functions (`inbox::list`,
//! `sent::collect`, `check::gather`), acts by running the same commands
//! ([`super::actions`]), and says the same things in a teacher's words; a
//! failure (the server down, keys changed) is shown on the page, not hidden.
//! Here: what they share (the context, rendering, plain words).

mod home;
mod received;
mod schools;
mod send;
mod sent;

pub use home::home;
pub use received::{inbox, inbox_pull};
pub use schools::{school, school_trust, schools};
pub use send::{send, send_check, send_go, send_job};
pub use sent::{receipts_csv, sent};

use std::sync::Arc;

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::session::Sessions;
use crate::home::Home;
use crate::pins::Pins;

/// What every page shares.
#[derive(Clone)]
pub struct Ctx {
    /// This school's home.
    pub home: Arc<Home>,
    /// Sessions and their CSRF tokens.
    pub sessions: Arc<Sessions>,
    /// Sends under way or done, by a random id.
    pub jobs: Arc<std::sync::Mutex<std::collections::HashMap<String, crate::ui::actions::Shared>>>,
}

impl Ctx {
    /// Whether this device's key holds the `dsl` role (it may send a
    /// child-protection file).
    pub(super) fn is_dsl(&self) -> bool {
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
    pub(super) fn school(&self) -> String {
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

pub(super) fn render(page: &impl Template) -> Response {
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
pub(super) fn what(kind: baton::pack::Kind) -> &'static str {
    match kind {
        baton::pack::Kind::Transfer => "pupil record",
        baton::pack::Kind::Safeguarding => "child-protection file",
    }
}

/// A pack's state in a teacher's words.
pub(super) fn plain(state: &str) -> String {
    match state {
        "pending" => "waiting to be collected".into(),
        "downloaded" => "collected, receipt not confirmed yet".into(),
        "relayed" => "passed to the other trust's server, receipt not confirmed yet".into(),
        "acknowledged" => "receipt confirmed".into(),
        "readdressed" => "forwarded by the trust".into(),
        "superseded" => "replaced by a correction".into(),
        "recall_requested" => "recalled after it was collected".into(),
        "purged" => "removed from the server (kept no longer)".into(),
        other => other.replace('_', " "),
    }
}

/// A destination in a teacher's words (the escrow codes are not schools).
pub(super) fn school_word(to: &str) -> String {
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
        include_str!("../templates/style.css"),
    )
        .into_response()
}
