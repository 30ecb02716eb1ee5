//! `baton keys`: this school's keys — list them (marking this device's),
//! show this device's public key for out-of-band comparison, revoke one
//! (a lost laptop). A new key holder enrols with their own one-time code
//! from the operator (`baton init` in their own home).

use anyhow::{Context as _, Result, bail};
use baton::api::v1;
use baton::keys::{KeyId, SchoolKey};

use crate::connect::{Clients, connect, explain};
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
    /// Revoke one of this school's keys (a lost or replaced device): packs are
    /// no longer sealed to it, and that device is shut out at once.
    Revoke {
        /// The key id (fingerprint) to revoke, spaces allowed.
        key_id: String,
        /// Revoke even though packs waiting for this school are sealed only
        /// to this key (nobody will be able to open them; the senders must
        /// send them again with `baton send --reseal`).
        #[arg(long)]
        force: bool,
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
                    peer: String::new(),
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
        Action::Revoke { key_id, force } => {
            let id: KeyId = key_id
                .parse()
                .context("a key id is 32 hex digits (spaces allowed)")?;
            let mut clients = connect(home).await?;
            let stranded = stranded_by(&mut clients, &config.school, id).await?;
            if !stranded.is_empty() {
                eprintln!(
                    "{} pack(s) waiting for {} are sealed only to key {} (or to keys already revoked):",
                    stranded.len(),
                    config.school,
                    id.grouped()
                );
                for (pack, from) in &stranded {
                    eprintln!("  {pack} from {from}");
                }
                eprintln!(
                    "Once it is revoked nobody can open them. Pull them first on the device that holds this key, if you still have it; otherwise revoke with --force and ask each sender to run `baton send --reseal` with the same files, which seals them again to your current keys."
                );
                if !force {
                    bail!(
                        "key {} was not revoked: {} waiting pack(s) would become unreadable (--force revokes anyway)",
                        id.grouped(),
                        stranded.len()
                    );
                }
            }
            // Signed with this device's key, so other schools follow the
            // revocation without confirming it (the server cannot forge one).
            let revoked_at_ms = crate::output::now_ms();
            let signature = home.identity()?.sign(&baton::trust::revocation_statement(
                &config.school,
                id,
                revoked_at_ms,
            ));
            clients
                .directory
                .revoke_key(v1::RevokeKeyRequest {
                    laestab: config.school.to_string(),
                    key_id: id.to_string(),
                    revoked_at_ms,
                    signature: signature.to_vec(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("revoking {}: {}", id.grouped(), explain(&s)))?;
            println!("revoked key {}", id.grouped());
        }
    }
    Ok(())
}

/// Packs in the inbox, not yet downloaded, that nobody could open once
/// `key` is revoked: every key they were sealed to is `key` or already
/// revoked. Listed by id and
/// sender.
async fn stranded_by(
    clients: &mut Clients,
    school: &baton::Laestab,
    key: KeyId,
) -> Result<Vec<(String, String)>> {
    let directory = clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: school.to_string(),
            peer: String::new(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("looking up {school}: {}", explain(&s)))?
        .into_inner();
    let mut active = Vec::new();
    for k in &directory.keys {
        let k = SchoolKey::try_from(k).context("the directory sent a malformed key")?;
        if k.is_active() && k.key_id() != key {
            active.push(k.key_id());
        }
    }
    // A downloaded pack was opened already: only those still waiting count.
    let waiting = crate::commands::inbox::list(clients).await?;
    Ok(waiting
        .iter()
        .filter(|w| w.state == "pending")
        .map(|w| w.header.header())
        .filter(|h| !h.recipient_key_ids.iter().any(|r| active.contains(r)))
        .map(|h| (h.pack_id.to_string(), h.from.to_string()))
        .collect())
}
