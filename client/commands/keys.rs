//! `baton keys`: this school's keys — list them (marking this device's),
//! show this device's public key for out-of-band comparison, revoke one
//! (a lost laptop). A new key holder enrols with their own one-time code
//! from the operator (`baton init` in their own home).

use anyhow::{Context as _, Result};
use baton::api::v1;
use baton::keys::{KeyId, SchoolKey};

use crate::connect::{connect, explain};
use crate::home::Home;
use crate::output::{json, table, time};

/// This school's keys.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List this school's keys (the default).
    List,
    /// Print this device's public key: key id, age recipient and signing key.
    Export,
    /// Revoke one of this school's keys: packs are no longer sealed to it.
    Revoke {
        /// The key id (fingerprint) to revoke, spaces allowed.
        key_id: String,
    },
}

/// Runs `baton keys`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let config = home.config()?;
    match args.action.unwrap_or(Action::List) {
        Action::Export => {
            let public = home.identity()?.public();
            if args.json {
                json(
                    &serde_json::json!({"id": public.key_id().to_string(), "school": config.school,
                    "age_recipient": public.age_recipient(), "signing_key": hex::encode(public.signing_key_bytes())}),
                );
            } else {
                println!("school:        {}", config.school);
                println!("key id:        {}", public.key_id().grouped());
                println!("age recipient: {}", public.age_recipient());
                println!("signing key:   {}", hex::encode(public.signing_key_bytes()));
            }
        }
        Action::List => {
            let mut clients = connect(home).await?;
            let school = clients
                .directory
                .get_school(v1::GetSchoolRequest {
                    laestab: config.school.to_string(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("looking up {}: {}", config.school, explain(&s)))?
                .into_inner();
            let keys: Vec<SchoolKey> = school
                .keys
                .iter()
                .map(SchoolKey::try_from)
                .collect::<Result<_, _>>()
                .context("malformed key")?;
            if args.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.key_id().to_string(), "label": k.label, "roles": k.roles,
                        "state": if k.is_active() { "active" } else { "revoked" }, "this_device": k.key_id().to_string() == config.key_id,
                        "created_at": time(k.created_at_ms)}))
                    .collect();
                json(&serde_json::Value::Array(items));
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        let roles: Vec<String> = k.roles.iter().map(ToString::to_string).collect();
                        let me = if k.key_id().to_string() == config.key_id {
                            "*"
                        } else {
                            ""
                        };
                        let state = if k.is_active() { "active" } else { "revoked" };
                        vec![
                            format!("{}{me}", k.key_id().grouped()),
                            roles.join(","),
                            k.label.clone(),
                            state.into(),
                        ]
                    })
                    .collect();
                table(
                    &["FINGERPRINT (* = this device)", "ROLES", "LABEL", "STATE"],
                    &rows,
                );
            }
        }
        Action::Revoke { key_id } => {
            let id: KeyId = key_id
                .parse()
                .context("a key id is 32 hex digits (spaces allowed)")?;
            let mut clients = connect(home).await?;
            clients
                .directory
                .revoke_key(v1::RevokeKeyRequest {
                    laestab: config.school.to_string(),
                    key_id: id.to_string(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("revoking {}: {}", id.grouped(), explain(&s)))?;
            println!("revoked key {}", id.grouped());
        }
    }
    Ok(())
}
