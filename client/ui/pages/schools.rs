//! `/schools`: the trust's directory; one school's keys with their
//! fingerprints, and the confirm step when they changed.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Ctx, render};
use crate::ui::session::check_csrf;

/// One row of the schools page.
struct SchoolRow {
    laestab: String,
    name: String,
    phase: String,
    keys: usize,
    formerly: String,
    /// The other trust's daemon that serves it; empty for this trust's.
    peer: String,
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
                    peer: s.peer,
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
    match crate::ui::actions::baton(&ctx.home, &["schools", "show", &number, "--json"]).await {
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
    let done = match crate::ui::actions::baton(&ctx.home, &["schools", "trust", &number]).await {
        Ok(ran) if ran.ok => format!("This computer now trusts the keys {number} has today."),
        Ok(ran) => format!("Not trusted: {}", ran.messages.join(" ")),
        Err(e) => format!("Not trusted: {e:#}"),
    };
    render(&school_page(&ctx, &headers, &number, Some(done)).await)
}
