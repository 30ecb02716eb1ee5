//! `/`: this school and key holder, what is waiting and overdue, and a
//! warning for every pinned school whose keys changed.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Ctx, render};
use crate::commands::{inbox, sent};
use crate::home::Home;
use crate::pins::Pins;

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
                peer: String::new(),
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
