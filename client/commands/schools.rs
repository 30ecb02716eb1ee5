//! `baton schools`: the directory, each school's keys and fingerprints, and
//! confirming a school's changed keys.

use anyhow::{Context as _, Result};
use baton::Laestab;
use baton::api::v1;
use baton::keys::SchoolKey;

use crate::connect::{connect, explain};
use crate::home::Home;
use crate::output::{json, table, time};
use crate::pins::{Check, Pins};

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
        /// The school's LAESTAB.
        laestab: Laestab,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept a school's current keys after checking them out of band.
    Trust {
        /// The school's LAESTAB.
        laestab: Laestab,
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
                        serde_json::json!({"id": s.laestab, "laestab": s.laestab, "name": s.name, "phase": s.phase, "urn": s.urn, "keys": s.keys.len()})
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
                        ]
                    })
                    .collect();
                table(&["LAESTAB", "NAME", "PHASE", "KEYS"], &rows);
            }
        }
        Some(Action::Show {
            laestab,
            json: as_json,
        }) => {
            let school = get(&mut clients, &laestab).await?;
            let mut pins = Pins::load(home)?;
            let pinned = pins.get(&laestab).is_some();
            let check = pins.check(&school)?;
            if !matches!(check, Check::Changed(_)) {
                pins.save(home)?;
            }
            let keys: Vec<SchoolKey> = school
                .keys
                .iter()
                .map(SchoolKey::try_from)
                .collect::<Result<_, _>>()
                .context("malformed key")?;
            if as_json || args.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({"id": k.key_id().to_string(), "label": k.label, "roles": k.roles,
                            "age_recipient": k.public.age_recipient(), "active": k.is_active(),
                            "created_at": time(k.created_at_ms), "revoked_at": k.revoked_at_ms.map(time)})
                    })
                    .collect();
                json(
                    &serde_json::json!({"id": school.laestab, "name": school.name, "phase": school.phase,
                    "urn": school.urn, "keys": items, "pin": pin_state(pinned, &check)}),
                );
            } else {
                println!("{} {} ({})", school.laestab, school.name, school.phase);
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        let roles: Vec<String> = k.roles.iter().map(ToString::to_string).collect();
                        let state = if k.is_active() {
                            "active".to_string()
                        } else {
                            format!("revoked {}", time(k.revoked_at_ms.unwrap_or(0)))
                        };
                        vec![
                            k.key_id().grouped(),
                            roles.join(","),
                            k.label.clone(),
                            state,
                        ]
                    })
                    .collect();
                table(&["FINGERPRINT", "ROLES", "LABEL", "STATE"], &rows);
                println!("pin: {}", pin_state(pinned, &check));
                if let Check::Changed(changes) = &check {
                    for c in changes {
                        println!("  - {c}");
                    }
                    println!(
                        "check these with the school, then run `baton schools trust {laestab}`"
                    );
                }
            }
        }
        Some(Action::Trust { laestab }) => {
            let school = get(&mut clients, &laestab).await?;
            let mut pins = Pins::load(home)?;
            pins.trust(&school)?;
            pins.save(home)?;
            println!("trusted the current keys of {laestab} ({})", school.name);
        }
    }
    Ok(())
}

fn pin_state(was_pinned: bool, check: &Check) -> &'static str {
    match (was_pinned, check) {
        (_, Check::Changed(_)) => "CHANGED since pinned",
        (false, _) => "not pinned before (pinned now)",
        (true, _) => "matches the pinned keys",
    }
}

async fn get(clients: &mut crate::connect::Clients, laestab: &Laestab) -> Result<v1::School> {
    Ok(clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: laestab.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("looking up {laestab}: {}", explain(&s)))?
        .into_inner())
}
