//! `baton schools`: the directory, each school's keys and fingerprints, and
//! confirming a school's changed keys.

use anyhow::Result;
use baton::Laestab;
use baton::api::v1;
use baton::keys::Role;

use crate::connect::{connect, explain};
use crate::home::Home;
use crate::output::{json, table, time};
use crate::pins::{Check, Listed, PinnedSchool, Pins, grouped_id};

/// The directory of schools.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Show one school's keys, roles and fingerprints (to compare by phone).
    Show {
        /// The school's LAESTAB (`XXXXXXX`: the escrow).
        laestab: Laestab,
        /// Another trust's daemon (the PEER column): the school as it lists
        /// it; with `XXXXXXX`, that trust's escrow, which signs the packs
        /// it re-addresses to this school.
        #[arg(long, value_name = "PEER")]
        peer: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a school's current keys after checking them out of band.
    Trust {
        /// The school's LAESTAB (`XXXXXXX`: the escrow).
        laestab: Laestab,
        /// Another trust's daemon, as for `show` (`XXXXXXX --peer PEER`:
        /// that trust's escrow).
        #[arg(long, value_name = "PEER")]
        peer: Option<String>,
    },
}

/// Runs `baton schools`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let mut clients = connect(home).await?;
    match args.action {
        None => {
            let schools = clients
                .directory
                .list_schools(v1::ListSchoolsRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("listing schools: {}", explain(&s)))?
                .into_inner()
                .schools;
            if args.json {
                let items: Vec<_> = schools
                    .iter()
                    .map(|s| {
                        serde_json::json!({"id": s.laestab, "laestab": s.laestab, "name": s.name, "phase": s.phase, "urn": s.urn, "keys": s.keys.len(), "aliases": s.aliases, "peer": (!s.peer.is_empty()).then_some(&s.peer)})
                    })
                    .collect();
                json(&serde_json::Value::Array(items));
            } else {
                let rows: Vec<Vec<String>> = schools
                    .iter()
                    .map(|s| {
                        vec![
                            s.laestab.clone(),
                            s.name.clone(),
                            s.phase.clone(),
                            s.keys.len().to_string(),
                            s.aliases.join(", "),
                            if s.peer.is_empty() {
                                "-".to_string()
                            } else {
                                s.peer.clone()
                            },
                        ]
                    })
                    .collect();
                table(
                    &["LAESTAB", "NAME", "PHASE", "KEYS", "FORMERLY", "PEER"],
                    &rows,
                );
            }
        }
        Some(Action::Show {
            laestab,
            peer,
            json: as_json,
        }) => {
            let school = get(&mut clients, &laestab, peer.as_deref()).await?;
            let mut pins = Pins::load(home)?;
            let before = pinned(&pins, &laestab, &school).cloned();
            let check = pins.check(&school)?;
            if !matches!(check, Check::Changed(_)) {
                pins.save(home)?;
            }
            let listed = pins.listed(&school)?;
            let directory = pins.directory_key()?;
            let pinned_count = pinned(&pins, &laestab, &school).map_or(0, |p| p.keys.len());
            let rows = compare(&listed, before.as_ref(), directory.is_some());
            if as_json || args.json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({"id": r.id, "label": r.label, "roles": r.roles,
                            "age_recipient": r.age_recipient, "active": r.revoked_at_ms.is_none(),
                            "created_at": r.created_at_ms.map(time), "revoked_at": r.revoked_at_ms.map(time),
                            "approved": r.approved, "pin": r.pin})
                    })
                    .collect();
                let changes: Vec<&String> = match &check {
                    Check::Changed(c) => c.iter().collect(),
                    _ => Vec::new(),
                };
                json(
                    &serde_json::json!({"id": school.laestab, "name": school.name, "phase": school.phase,
                    "urn": school.urn, "aliases": school.aliases, "peer": (!school.peer.is_empty()).then_some(&school.peer), "keys": items, "pin": pin_state(before.is_some(), &check, pinned_count),
                    "changes": changes, "directory_key": directory.map(|d| d.fingerprint())}),
                );
            } else {
                println!("{} {} ({})", school.laestab, school.name, school.phase);
                if !school.peer.is_empty() {
                    println!("served by another trust's daemon: {}", school.peer);
                }
                let table_rows: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let state = r.revoked_at_ms.map_or_else(
                            || "active".to_string(),
                            |at| format!("revoked {}", time(at)),
                        );
                        let approved = match r.approved {
                            Some(true) => "yes",
                            Some(false) => "NO",
                            None => "-",
                        };
                        vec![
                            grouped_id(&r.id),
                            baton::keys::role_names(&r.roles, ","),
                            r.label.clone(),
                            state,
                            approved.to_string(),
                            r.pin.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["FINGERPRINT", "ROLES", "LABEL", "STATE", "APPROVED", "PIN"],
                    &table_rows,
                );
                match directory {
                    Some(d) => println!(
                        "directory key: {} (APPROVED: endorsed by it)",
                        d.fingerprint()
                    ),
                    None => println!(
                        "no directory key pinned: compare each fingerprint with the school by phone"
                    ),
                }
                println!("pin: {}", pin_state(before.is_some(), &check, pinned_count));
                if let Check::Changed(changes) = &check {
                    for c in changes {
                        println!("  - {c}");
                    }
                    let named = peer.map_or(String::new(), |p| format!(" --peer {p}"));
                    println!(
                        "check these with the school, then run `baton schools trust {laestab}{named}`"
                    );
                }
            }
        }
        Some(Action::Trust { laestab, peer }) => {
            let school = get(&mut clients, &laestab, peer.as_deref()).await?;
            let mut pins = Pins::load(home)?;
            pins.trust(&school)?;
            pins.save(home)?;
            println!("trusted the current keys of {laestab} ({})", school.name);
        }
    }
    Ok(())
}

fn pin_state(was_pinned: bool, check: &Check, pinned_keys: usize) -> &'static str {
    match (was_pinned, check) {
        (_, Check::Changed(_)) => "CHANGED since pinned",
        _ if pinned_keys == 0 => "no key pinned (none approved yet)",
        (false, _) => "not pinned before (pinned now)",
        (true, _) => "matches the pinned keys",
    }
}

/// One key as the directory lists it and as it was pinned.
struct Row {
    id: String,
    label: String,
    roles: Vec<Role>,
    age_recipient: String,
    created_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
    /// Endorsed by the pinned directory key (`None`: none pinned).
    approved: Option<bool>,
    /// How it compares with the pin.
    pin: String,
}

/// Every listed key and every pinned key, compared field by field.
fn compare(listed: &Listed, pinned: Option<&PinnedSchool>, directory: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let approved_keys = listed.keys.iter().map(|k| (k, true));
    let unapproved = listed.unapproved.iter().map(|k| (k, false));
    for (k, approved) in approved_keys.chain(unapproved) {
        let id = k.key_id().to_string();
        let pin = match pinned.and_then(|p| p.keys.iter().find(|p| p.key_id == id)) {
            None if !approved => "not pinned: not approved".to_string(),
            None => "not pinned before".to_string(),
            Some(p) => {
                let mut differences = Vec::new();
                if p.roles != k.roles {
                    differences.push(format!(
                        "roles were {}",
                        baton::keys::role_names(&p.roles, ",")
                    ));
                }
                if p.label != k.label {
                    differences.push(format!("label was {:?}", p.label));
                }
                match (p.revoked_at_ms, k.revoked_at_ms) {
                    (None, Some(_)) => differences.push("pinned as active".into()),
                    (Some(at), None) => differences.push(format!("pinned as revoked {}", time(at))),
                    (Some(a), Some(b)) if a != b => {
                        differences.push(format!("pinned as revoked {}", time(a)))
                    }
                    _ => {}
                }
                if p.age_recipient != k.public.age_recipient() {
                    differences.push("age recipient differs".into());
                }
                if differences.is_empty() {
                    "matches".to_string()
                } else {
                    format!("DIFFERS: {}", differences.join("; "))
                }
            }
        };
        rows.push(Row {
            id,
            label: k.label.clone(),
            roles: k.roles.clone(),
            age_recipient: k.public.age_recipient().to_string(),
            created_at_ms: Some(k.created_at_ms),
            revoked_at_ms: k.revoked_at_ms,
            approved: directory.then_some(approved),
            pin,
        });
    }
    for p in pinned.map(|p| p.keys.as_slice()).unwrap_or_default() {
        if !rows.iter().any(|r| r.id == p.key_id) {
            rows.push(Row {
                id: p.key_id.clone(),
                label: p.label.clone(),
                roles: p.roles.clone(),
                age_recipient: p.age_recipient.clone(),
                created_at_ms: None,
                revoked_at_ms: p.revoked_at_ms,
                approved: None,
                pin: "pinned, NOT LISTED by the directory".into(),
            });
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// The pin of `school` as listed, asked for as `laestab` (a former number
/// finds the pin it carried over).
fn pinned<'a>(pins: &'a Pins, laestab: &Laestab, school: &v1::School) -> Option<&'a PinnedSchool> {
    let peer_escrow = !school.peer.is_empty() && school.laestab == Laestab::ESCROW.as_str();
    pins.get_listed(school)
        .or_else(|| (!peer_escrow).then(|| pins.get(laestab)).flatten())
}

/// A school as the directory lists it (as `peer` lists it, if given).
async fn get(
    clients: &mut crate::connect::Clients,
    laestab: &Laestab,
    peer: Option<&str>,
) -> Result<v1::School> {
    Ok(clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: laestab.to_string(),
            peer: peer.unwrap_or_default().to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("looking up {laestab}: {}", explain(&s)))?
        .into_inner())
}
