//! `batond admin peer export|add|list|remove`: peering with another trust's
//! daemon by descriptors, both operators adding each other (there is no
//! discovery). `export` writes this daemon's signed descriptor and prints
//! its fingerprints, which its operator reads to the other; `add` checks
//! one (format, signature, validity, not this daemon's own) and adds it
//! only if its daemon key matches the fingerprint the operator was given;
//! every change is audited (`peer.add`, `peer.remove`). `check` reaches a
//! peer over mutual TLS now; `list` shows how each peer's directory was
//! last read and the school numbers in conflict.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::audit::Event;
use crate::config::Config;
use crate::federation::descriptor::{Descriptor, cert_sha256, fingerprint};
use crate::federation::directory::Conflict;
use crate::notary::Notary;
use crate::store::{Peer, PeerSync, Store, StoreError, now_ms};

/// How long an exported descriptor may be added for, by default (days).
const DEFAULT_VALID_DAYS: u32 = 30;

/// `batond admin peer …`
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Write this daemon's signed peer descriptor to FILE, for the other
    /// trust's operator (`batond admin peer add FILE` on their side).
    Export {
        /// Where to write the descriptor (JSON; it holds no secret).
        file: PathBuf,
        /// This daemon's name as the other trust will list it (lower-case
        /// letters, digits and hyphens).
        #[arg(long)]
        name: String,
        /// This daemon's federation listener as the other daemon reaches it
        /// (https://HOST:PORT).
        #[arg(long)]
        url: String,
        /// Days the other side has to add it.
        #[arg(long, default_value_t = DEFAULT_VALID_DAYS, value_parser = clap::value_parser!(u32).range(1..=365))]
        valid_days: u32,
    },
    /// Trust another trust's daemon from its descriptor. The daemon key's
    /// fingerprint, as its operator read it to you (`peer export` printed
    /// it), must match, or nothing is added.
    Add {
        /// The descriptor file the other operator exported.
        file: PathBuf,
        /// The daemon key fingerprint the other operator read to you, e.g.
        /// "1f2e 3d4c …" (spaces and case do not matter).
        #[arg(long, value_name = "FINGERPRINT")]
        fingerprint: String,
        /// A local authority code (3 digits) the peer may list schools for,
        /// as the data-sharing agreement says; repeat for more. Schools it
        /// lists elsewhere are left out. Without it: any.
        #[arg(long = "la", value_name = "CODE")]
        la_codes: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the peers.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Reach a peer's federation listener now (mutual TLS), check it
    /// answers with its descriptor's daemon key, and read its directory.
    Check {
        /// The peer's name, as `peer list` shows it.
        name: String,
    },
    /// Stop trusting a peer.
    Remove {
        /// The peer's name, as `peer list` shows it.
        name: String,
    },
}

/// A peer as `list --json` and `add --json` print it, with how its last
/// directory sync went and the numbers it claims that conflict.
fn peer_json(p: &Peer, sync: Option<&PeerSync>, conflicts: &[&Conflict]) -> serde_json::Value {
    let time = |t: Option<i64>| t.map(crate::audit::time);
    serde_json::json!({
        "synced_at": time(sync.and_then(|s| s.synced_at_ms)),
        "sync_tried_at": time(sync.and_then(|s| s.tried_at_ms)),
        "sync_error": sync.and_then(|s| s.error.clone()),
        "schools": sync.map_or(0, |s| s.schools),
        "escrow": sync.is_some_and(|s| s.escrow),
        "conflicts": conflicts.iter().map(|c| serde_json::json!({"laestab": c.laestab, "claimed_by": c.claimed_by})).collect::<Vec<_>>(),
        "name": p.name,
        "url": p.url,
        "ca_cert_sha256": hex::encode(p.ca_cert_sha256),
        "daemon_key": hex::encode(p.daemon_key),
        "valid_until": crate::audit::time(p.valid_until_ms),
        "added_at": crate::audit::time(p.added_at_ms),
        "la_codes": p.la_codes,
    })
}

/// The two fingerprints, as the operators read them to each other.
fn fingerprints(ca_cert_sha256: &[u8], daemon_key: &[u8]) -> String {
    format!(
        "  federation CA  {}\n  daemon key     {}",
        fingerprint(ca_cert_sha256),
        fingerprint(daemon_key)
    )
}

/// How a peer's directory sync went, in words.
fn sync_line(sync: Option<&PeerSync>) -> String {
    let Some(sync) = sync else {
        return "never read".into();
    };
    let read = match sync.synced_at_ms {
        Some(at) => format!(
            "{} school(s){}, read {}",
            sync.schools,
            if sync.escrow { " and its escrow" } else { "" },
            crate::audit::time(at)
        ),
        None => "never read".into(),
    };
    match (&sync.error, sync.tried_at_ms) {
        (Some(error), Some(at)) => format!("{read}; at {}: {error}", crate::audit::time(at)),
        _ => read,
    }
}

/// The numbers claimed by more than one of this daemon and its peers.
async fn conflicts<S: Store>(store: &S) -> anyhow::Result<Vec<Conflict>> {
    let local = store.list_schools().await.context("reading schools")?;
    let numbers = crate::federation::directory::local_numbers(&local);
    let stored = store.peer_schools().await.context("reading peer schools")?;
    Ok(crate::federation::directory::merge(&numbers, &stored).1)
}

/// Reads and parses a descriptor file, naming it in every error.
fn read(file: &Path) -> anyhow::Result<Descriptor> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the descriptor {}", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a peer descriptor", file.display()))
}

/// Runs one `batond admin peer` command.
pub async fn run<S: Store>(
    store: &S,
    config: &Config,
    command: PeerCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        PeerCommand::Export {
            file,
            name,
            url,
            valid_days,
        } => {
            let cert = crate::federation::ensure_identity(&config.data_dir)?;
            let notary = Notary::load_or_create(&config.data_dir)?;
            let now = now_ms();
            let until = now + i64::from(valid_days) * 86_400_000;
            let descriptor = notary.describe(&name, &url, &cert, now, until)?;
            let json = serde_json::to_string_pretty(&descriptor)?;
            std::fs::write(&file, json + "\n")
                .with_context(|| format!("writing {}", file.display()))?;
            writeln!(
                out,
                "wrote {} (valid until {}). Send it to the other trust's operator, then read them these \
                 fingerprints by phone; they must see the same when they add it:\n{}",
                file.display(),
                crate::audit::time(until),
                fingerprints(&cert_sha256(&cert)?, &notary.public())
            )?;
        }
        PeerCommand::Add {
            file,
            fingerprint: expected,
            la_codes,
            json,
        } => {
            for code in &la_codes {
                if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    bail!("--la {code:?}: a local authority code is 3 digits, e.g. 926");
                }
            }
            let descriptor = read(&file)?;
            let now = now_ms();
            let mut peer = descriptor
                .check(now)
                .with_context(|| format!("{}", file.display()))?;
            peer.la_codes = la_codes;
            peer.la_codes.sort();
            peer.la_codes.dedup();
            let plain = |text: &str| text.replace(' ', "").to_ascii_lowercase();
            let found = fingerprint(&peer.daemon_key);
            if plain(&expected) != plain(&found) {
                bail!(
                    "{}: its daemon key's fingerprint is {found}, not the {expected:?} you were given. \
                     Nothing was added: check with the other trust's operator (a typo, an old \
                     descriptor, or a file altered on its way)",
                    file.display()
                );
            }
            let notary = Notary::load_or_create(&config.data_dir)?;
            if peer.daemon_key == notary.public() {
                bail!(
                    "{}: this is this daemon's own descriptor; add the other trust's",
                    file.display()
                );
            }
            let subject = format!("{} key={}", peer.name, hex::encode(peer.daemon_key));
            match store
                .add_peer(&peer, Event::by_admin("peer.add", subject))
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => bail!(
                    "a peer named {:?}, or with the same daemon key or federation CA, is already added: \
                     `batond admin peer remove {}` first to replace it",
                    peer.name,
                    peer.name
                ),
                Err(e) => return Err(e).context("storing the peer"),
            }
            if json {
                writeln!(out, "{}", peer_json(&peer, None, &[]))?;
            } else {
                writeln!(
                    out,
                    "added peer {} at {}; its daemon key matches the fingerprint you were given. \
                     Its federation CA, to compare too:\n{}",
                    peer.name,
                    peer.url,
                    fingerprints(&peer.ca_cert_sha256, &peer.daemon_key)
                )?;
            }
        }
        PeerCommand::List { json } => {
            let peers = store.peers().await.context("reading peers")?;
            let syncs = store.peer_syncs().await.context("reading peer syncs")?;
            let backlog = store
                .relay_backlog()
                .await
                .context("reading the relay queue")?;
            let conflicts = conflicts(store).await?;
            let of = |p: &Peer| {
                let sync = syncs.iter().find(|s| s.name == p.name);
                let mine: Vec<&Conflict> = conflicts
                    .iter()
                    .filter(|c| c.claimed_by.contains(&p.name))
                    .collect();
                (sync, mine)
            };
            if json {
                let list: Vec<_> = peers
                    .iter()
                    .map(|p| {
                        let (sync, mine) = of(p);
                        let mut item = peer_json(p, sync, &mine);
                        let waiting = backlog.iter().find(|b| b.peer == p.name);
                        item["relay_waiting"] = waiting.map_or(0, |b| b.packs).into();
                        item["relay_oldest"] = waiting
                            .and_then(|b| b.oldest_ms)
                            .map(crate::audit::time)
                            .into();
                        item["relay_error"] = waiting.and_then(|b| b.last_error.clone()).into();
                        item
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else if peers.is_empty() {
                writeln!(out, "no peers")?;
            } else {
                for p in &peers {
                    let (sync, mine) = of(p);
                    let las = if p.la_codes.is_empty() {
                        "any".to_string()
                    } else {
                        p.la_codes.join(", ")
                    };
                    writeln!(
                        out,
                        "{}  {}  added {}\n{}\n  directory      {}\n  authorities    {las}",
                        p.name,
                        p.url,
                        crate::audit::time(p.added_at_ms),
                        fingerprints(&p.ca_cert_sha256, &p.daemon_key),
                        sync_line(sync)
                    )?;
                    match backlog.iter().find(|b| b.peer == p.name) {
                        Some(b) => writeln!(
                            out,
                            "  relay queue    {} pack(s) waiting, oldest stored {}{}",
                            b.packs,
                            b.oldest_ms
                                .map_or_else(|| "-".to_string(), crate::audit::time),
                            b.last_error
                                .as_deref()
                                .map(|e| format!("; last error: {e}"))
                                .unwrap_or_default()
                        )?,
                        None => writeln!(out, "  relay queue    empty")?,
                    }
                    for c in mine {
                        writeln!(
                            out,
                            "  CONFLICT       {} is claimed by {}: listed by no peer until one operator withdraws it",
                            c.laestab,
                            c.claimed_by.join(" and ")
                        )?;
                    }
                }
            }
        }
        PeerCommand::Check { name } => {
            let peers = store.peers().await.context("reading peers")?;
            let Some(peer) = peers.iter().find(|p| p.name == name) else {
                bail!("no peer named {name:?} (`batond admin peer list` shows them)");
            };
            let answer = crate::federation::sync::sync_one(store, peer, &config.data_dir)
                .await
                .with_context(|| format!("peer {name} at {}", peer.url))?;
            writeln!(
                out,
                "reached {name} at {}: it presented a certificate of the pinned federation CA, \
                 answered with its descriptor's daemon key, and knows this daemon as {:?}; \
                 {} school(s) read from its directory",
                peer.url, answer.caller_name, answer.schools
            )?;
            for problem in &answer.problems {
                writeln!(
                    out,
                    "  left out: {}",
                    crate::federation::sync::clean(problem)
                )?;
            }
        }
        PeerCommand::Remove { name } => {
            let event = Event::by_admin("peer.remove", name.clone());
            if !store
                .remove_peer(&name, now_ms(), event)
                .await
                .context("removing the peer")?
            {
                bail!("no peer named {name:?} (`batond admin peer list` shows them)");
            }
            writeln!(out, "removed peer {name}")?;
        }
    }
    Ok(())
}
