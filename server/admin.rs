//! `batond admin`: the operator's commands. They open the same database as
//! `serve` directly (SQLite in WAL mode with immediate write transactions,
//! so they work while the daemon runs), and every change is audited. Only
//! `migrate` may create a database; the others refuse a SQLite file that
//! does not exist (a wrong `--data-dir` would otherwise hand out codes for
//! an empty database no daemon serves).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use baton::Laestab;
use baton::keys::KeyId;
use clap::Subcommand;

mod audit;
mod backup;
mod calendar;
mod dashboard;
mod escrow;
pub mod keys;
mod peer;
pub mod report;

use crate::audit::Event;
use crate::auth;
use crate::notary::Notary;
use baton::keys::Role;

use crate::config::{CodeArgs, Config};
use crate::store::{NewSchool, Store, StoreError, now_ms};

/// Operator commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrol and list schools.
    #[command(subcommand)]
    School(SchoolCommand),
    /// Revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Approve, list and revoke school keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check or export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The trust's term dates, from which due dates are counted.
    #[command(subcommand)]
    Calendar(CalendarCommand),
    /// The trust's escrow holder, for pupils whose next school is unknown.
    #[command(subcommand)]
    Escrow(EscrowCommand),
    /// What moved, what was on time, what is overdue: per sending school,
    /// receiving school and kind, for packs stored in the period.
    Report {
        /// First day of the period (YYYY-MM-DD) [default: the beginning].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        since: Option<time::Date>,
        /// Last day of the period (YYYY-MM-DD) [default: today].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        until: Option<time::Date>,
        /// Print one JSON object: `pairs` and `totals`.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV, one row per (from, to, kind).
        #[arg(long)]
        csv: bool,
        /// Also write one printable page (HTML, no pupil data) to FILE, for
        /// heads and governors.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Delete the ciphertext of packs past the trust's retention (as the
    /// daemon does hourly): the pack's header, receipt and times stay, and
    /// each deletion is recorded in the audit log. Days default to the
    /// `[retention]` table.
    Purge {
        /// List what would be purged; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Days after its receipt an acknowledged pack is kept.
        #[arg(long, value_name = "N")]
        acknowledged_days: Option<u32>,
        /// Days after upload a pack never acknowledged is kept.
        #[arg(long, value_name = "N")]
        unacknowledged_days: Option<u32>,
        /// Print JSON: one object per pack.
        #[arg(long)]
        json: bool,
    },
    /// Write a copy of this server that restores into a new folder DIR,
    /// while the daemon serves: the database (SQLite; PostgreSQL is backed
    /// up with pg_dump), the generated TLS files, the audit key and the
    /// config file; the copy's audit log is verified. `batond serve
    /// --data-dir DIR` serves the same trust from it.
    Backup {
        /// A new (or empty) folder.
        dir: PathBuf,
    },
    /// Check that this database holds together, e.g. after a restore: the
    /// audit chain verifies and every pack's ciphertext still held matches
    /// the SHA-256 its sender signed. Reads every held pack.
    Check,
    /// The trust dashboard (`batond serve --http-listen`).
    #[command(subcommand)]
    Dashboard(DashboardCommand),
    /// Peering with other trusts' daemons (federation), by descriptors.
    #[command(subcommand)]
    Peer(peer::PeerCommand),
    /// Apply database migrations and exit.
    Migrate,
}

/// `batond admin dashboard …`
#[derive(Debug, Subcommand)]
pub enum DashboardCommand {
    /// Print a one-time sign-in link to the dashboard (valid 15 minutes).
    Link {
        /// The dashboard's address as the browser reaches it
        /// (https://HOST:PORT) [default: the one the serving daemon recorded].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print JSON: `{"url": …, "expires_at": …}`.
        #[arg(long)]
        json: bool,
    },
}

/// `batond admin school …`
#[derive(Debug, Subcommand)]
pub enum SchoolCommand {
    /// Enrol a school and print its one-time enrolment code.
    Add {
        /// The school's LAESTAB (3-digit LA code + 4-digit establishment number).
        laestab: String,
        /// The school's name.
        #[arg(long)]
        name: String,
        /// Phase of education, e.g. primary, secondary, all-through.
        #[arg(long)]
        phase: String,
        /// Unique Reference Number (6 digits), if known.
        #[arg(long)]
        urn: Option<String>,
        /// A role the code grants (repeat for several): the key enrolled
        /// with it may hold only these. `dsl` keys receive child-protection files.
        #[arg(long = "role", value_name = "dsl|senco|staff", default_value = "staff")]
        roles: Vec<Role>,
        /// Print `{"laestab": …, "code": …}` instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        code: CodeArgs,
    },
    /// Issue another one-time enrolment code for an enrolled school, for a
    /// further key holder (another device, the DSL) to run `baton init` with.
    Code {
        /// The school's LAESTAB.
        laestab: String,
        /// A role the code grants (repeat for several): the key enrolled
        /// with it may hold only these. `dsl` keys receive child-protection files.
        #[arg(long = "role", value_name = "dsl|senco|staff", default_value = "staff")]
        roles: Vec<Role>,
        /// Print `{"laestab": …, "code": …}` instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        code: CodeArgs,
    },
    /// List enrolled schools.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Give a school a new LAESTAB (an academy conversion): it keeps its
    /// keys, tokens and packs under NEW, and OLD becomes an alias that
    /// still routes to it (packs addressed to OLD are delivered to NEW).
    Renumber {
        /// The school's current LAESTAB.
        old: String,
        /// Its new LAESTAB.
        new: String,
        /// Its new name, if it changes too.
        #[arg(long)]
        name: Option<String>,
    },
}

/// `batond admin token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Revoke every API token of a school (it must enrol again or be given a new code).
    Revoke {
        /// The school's LAESTAB.
        #[arg(long)]
        school: String,
    },
}

/// `batond admin key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Revoke one key of a school: packs are no longer sealed to it, and the
    /// device that enrolled it is shut out at once (its token is revoked).
    Revoke {
        /// The school's LAESTAB.
        laestab: String,
        /// The key id (32 hex digits, spaces allowed).
        key_id: String,
        /// The trust's secret directory key file, to sign the revocation
        /// (schools then follow it without confirming the change).
        #[arg(long, value_name = "FILE")]
        directory_key_file: Option<PathBuf>,
    },
    /// Approve a school's key with the trust's directory key, once its
    /// holder has read you its fingerprint (`baton keys show`) out of band.
    Approve {
        /// The school's LAESTAB.
        laestab: String,
        /// The key id the school read to you (32 hex digits, spaces allowed).
        key_id: String,
        /// The trust's secret directory key file (from `batond new-directory-key`).
        #[arg(long, value_name = "FILE")]
        directory_key_file: PathBuf,
    },
    /// List active keys the directory key has not approved yet.
    Pending {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// `batond admin escrow …`
#[derive(Debug, Subcommand)]
pub enum EscrowCommand {
    /// Enrol the trust's escrow holder (e.g. its data lead), or another key
    /// holder of it, and print a one-time enrolment code: packs addressed
    /// to XXXXXXX (destination unknown) or MMMMMMM (independent or abroad)
    /// are then sealed to the escrow's keys, to be re-addressed once the
    /// pupil's new school is known.
    Add {
        /// Who holds the escrow, e.g. "Trust data lead".
        #[arg(long)]
        name: String,
        /// Print `{"laestab": "XXXXXXX", "code": …}` instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        code: CodeArgs,
    },
}

/// `batond admin calendar …`
#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Import a calendar (TOML: `name`, then `[[term]]` tables with `start`,
    /// `end` and optional `closures`, dates YYYY-MM-DD), replacing the one
    /// before: the trust's default, or a school's own with `--school`.
    Import {
        /// The calendar file.
        file: PathBuf,
        /// A school (an academy) with its own term dates.
        #[arg(long, value_name = "LAESTAB")]
        school: Option<String>,
    },
    /// Show the calendars, their school days and the bank holidays they meet.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `batond admin audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first broken entry. With
    /// `--checkpoint`, also that the log still holds what each signed
    /// checkpoint in FILE fixed (not truncated, not rewritten).
    Verify {
        /// Signed checkpoints (`baton checkpoint`, `audit checkpoint`,
        /// `audit export --checkpoint`): one JSON object, an array or JSON lines.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Print every entry as a JSON line.
    Export {
        /// Also write the signed checkpoint of the last entry printed to FILE.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Print a signed checkpoint of the log's head as it is now, to keep
    /// apart from the server.
    Checkpoint,
}

impl Command {
    /// The enrolment-code options of this command (empty unless it issues codes).
    pub fn code_args(&self) -> CodeArgs {
        match self {
            Self::School(SchoolCommand::Add { code, .. } | SchoolCommand::Code { code, .. })
            | Self::Escrow(EscrowCommand::Add { code, .. }) => code.clone(),
            _ => CodeArgs::default(),
        }
    }

    /// Whether this command may create the database (only `migrate` may).
    pub fn creates_database(&self) -> bool {
        matches!(self, Self::Migrate)
    }
}

fn parse_date(text: &str) -> Result<time::Date, String> {
    baton::dates::parse_ymd(text.trim()).map_err(|e| format!("{text:?}: {e} (expected YYYY-MM-DD)"))
}

fn parse_key(text: &str) -> anyhow::Result<KeyId> {
    text.parse().with_context(|| format!("key id {text:?}"))
}

fn parse_laestab(text: &str) -> anyhow::Result<Laestab> {
    Laestab::parse(text).with_context(|| {
        format!("LAESTAB {text:?} (the trust's escrow for XXXXXXX and MMMMMMM is `batond admin escrow add`)")
    })
}

/// Runs one admin command against `store`.
pub async fn run<S: Store>(store: &S, config: &Config, command: Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Migrate => writeln!(out, "database is up to date")?,
        Command::Check => backup::check(store, &mut out).await?,
        Command::Dashboard(DashboardCommand::Link { url, json }) => {
            dashboard::link(store, config, url.as_deref(), json, &mut out).await?;
        }
        Command::Peer(command) => peer::run(store, config, command, &mut out).await?,
        Command::School(SchoolCommand::Add {
            laestab,
            name,
            phase,
            urn,
            roles,
            json,
            code: _,
        }) => {
            let laestab = parse_laestab(&laestab)?;
            let urn = urn.unwrap_or_default();
            let urn_ok =
                urn.is_empty() || (urn.len() == 6 && urn.bytes().all(|b| b.is_ascii_digit()));
            if !urn_ok {
                bail!("--urn {urn:?}: a URN is 6 digits");
            }
            if name.trim().is_empty() || phase.trim().is_empty() {
                bail!("--name and --phase must not be empty");
            }
            let school = NewSchool {
                laestab,
                name,
                phase,
                urn,
            };
            let (code, hash, now, expires) = new_code(config);
            match store
                .add_school(
                    &school,
                    hash,
                    &roles,
                    now,
                    expires,
                    Event::by_admin("school.add", code_subject(laestab, &roles)),
                )
                .await
            {
                Err(StoreError::Conflict(_)) => bail!(
                    "school {laestab} is already enrolled; `batond admin school code {laestab}` issues another code"
                ),
                other => other.context("enrolling the school")?,
            }
            print_code(&mut out, config, laestab, &code, &roles, json, "enrolled")?;
        }
        Command::School(SchoolCommand::Code {
            laestab,
            roles,
            json,
            ..
        }) => {
            let laestab = parse_laestab(&laestab)?;
            let (code, hash, now, expires) = new_code(config);
            match store
                .issue_code(
                    &laestab,
                    hash,
                    &roles,
                    now,
                    expires,
                    Event::by_admin("school.code", code_subject(laestab, &roles)),
                )
                .await
            {
                Err(StoreError::NotFound(_)) => {
                    bail!("school {laestab} is not enrolled; use `batond admin school add` first")
                }
                other => other.context("issuing an enrolment code")?,
            }
            print_code(
                &mut out,
                config,
                laestab,
                &code,
                &roles,
                json,
                "issued a code for",
            )?;
        }
        Command::School(SchoolCommand::Renumber { old, new, name }) => {
            let (old, new) = (parse_laestab(&old)?, parse_laestab(&new)?);
            if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                bail!("--name must not be empty");
            }
            let event = Event::by_admin("school.renumber", format!("{old} -> {new}"));
            match store
                .renumber(&old, &new, name.as_deref(), now_ms(), event)
                .await
            {
                Err(StoreError::NotFound(_)) => bail!(
                    "{old} is not an enrolled school's current number (`batond admin school list`)"
                ),
                Err(StoreError::Conflict(_)) => {
                    bail!("{new} is already a school's number or former number")
                }
                other => other.context("renumbering the school")?,
            }
            writeln!(
                out,
                "{old} is now {new}: its keys, tokens and packs moved with it, and packs addressed to {old} reach it"
            )?;
        }
        Command::School(SchoolCommand::List { json }) => {
            let schools = store.list_schools().await.context("listing schools")?;
            if json {
                let rows: Vec<_> = schools
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "laestab": s.info.laestab.to_string(),
                            "name": s.info.name,
                            "phase": s.info.phase,
                            "urn": s.info.urn,
                            "active_keys": s.keys.iter().filter(|k| k.is_active()).count(),
                            "keys": s.keys.len(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
            } else {
                for s in &schools {
                    let active = s.keys.iter().filter(|k| k.is_active()).count();
                    writeln!(
                        out,
                        "{}  {:<40}  {:<12}  {} active key(s)",
                        s.info.laestab, s.info.name, s.info.phase, active
                    )?;
                }
            }
        }
        Command::Token(TokenCommand::Revoke { school }) => {
            let laestab = parse_laestab(&school)?;
            let n = store
                .revoke_tokens(&laestab, now_ms(), Event::by_admin("token.revoke", laestab))
                .await
                .with_context(|| format!("revoking tokens of {laestab}"))?;
            writeln!(out, "revoked {n} token(s) of {laestab}")?;
        }
        Command::Key(KeyCommand::Revoke {
            laestab,
            key_id,
            directory_key_file,
        }) => {
            let laestab = parse_laestab(&laestab)?;
            let key_id = parse_key(&key_id)?;
            keys::revoke(
                store,
                config,
                &laestab,
                key_id,
                directory_key_file.as_deref(),
                &mut out,
            )
            .await?;
        }
        Command::Key(KeyCommand::Approve {
            laestab,
            key_id,
            directory_key_file,
        }) => {
            let laestab = parse_laestab(&laestab)?;
            let key_id = parse_key(&key_id)?;
            keys::approve(
                store,
                config,
                &laestab,
                key_id,
                &directory_key_file,
                &mut out,
            )
            .await?;
        }
        Command::Key(KeyCommand::Pending { json }) => {
            keys::pending(store, config, json, &mut out).await?;
        }
        Command::Audit(AuditCommand::Verify { checkpoint }) => {
            audit::verify(store, &config.data_dir, checkpoint.as_deref(), &mut out).await?;
        }
        Command::Audit(AuditCommand::Export { checkpoint }) => {
            let notary = Notary::load_or_create(&config.data_dir)?;
            audit::export(store, &notary, checkpoint.as_deref(), &mut out).await?;
        }
        Command::Calendar(CalendarCommand::Import { file, school }) => {
            let school = school.as_deref().map(parse_laestab).transpose()?;
            calendar::import(store, &file, school, &mut out).await?;
        }
        Command::Escrow(EscrowCommand::Add { name, json, .. }) => {
            escrow::add(store, config, name, json, &mut out).await?;
        }
        Command::Calendar(CalendarCommand::Show { json }) => {
            calendar::show(store, json, &mut out).await?;
        }
        Command::Report {
            since,
            until,
            json,
            csv,
            html,
        } => {
            let format = match (json, csv) {
                (true, _) => report::Format::Json,
                (_, true) => report::Format::Csv,
                _ => report::Format::Text,
            };
            report::run(store, since, until, format, html.as_deref(), &mut out).await?;
        }
        Command::Purge {
            dry_run,
            acknowledged_days,
            unacknowledged_days,
            json,
        } => {
            let retention = crate::config::Retention {
                acknowledged_days: acknowledged_days.unwrap_or(config.retention.acknowledged_days),
                unacknowledged_days: unacknowledged_days
                    .unwrap_or(config.retention.unacknowledged_days),
            };
            let done = crate::retention::purge(store, retention, now_ms(), "admin", dry_run)
                .await
                .context("purging")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&done)?)?;
            } else {
                for p in &done {
                    writeln!(
                        out,
                        "{} {} -> {} ({}) sha256={}",
                        p.pack_id, p.from, p.to, p.reason, p.ciphertext_sha256
                    )?;
                }
                let verb = if dry_run { "would purge" } else { "purged" };
                writeln!(
                    out,
                    "{verb} {} pack(s) (acknowledged over {} days ago, or stored over {} days ago and never acknowledged)",
                    done.len(),
                    retention.acknowledged_days,
                    retention.unacknowledged_days
                )?;
            }
        }
        Command::Backup { dir } => {
            backup::run(store, config, &dir, &mut out).await?;
        }
        Command::Audit(AuditCommand::Checkpoint) => {
            let notary = Notary::load_or_create(&config.data_dir)?;
            audit::checkpoint(store, &notary, &mut out).await?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The audit subject of an issued code: the school and the roles it grants.
fn code_subject(laestab: Laestab, roles: &[Role]) -> String {
    format!("{laestab} roles={}", baton::keys::role_names(roles, ","))
}

/// A fresh one-time code, its hash, now, and its expiry.
fn new_code(config: &Config) -> (String, [u8; 32], i64, i64) {
    let (code, hash) = auth::new_code();
    let now = now_ms();
    let hours = i64::try_from(config.enrolment_code_hours).unwrap_or(i64::MAX / 3_600_000);
    (
        code,
        hash,
        now,
        now.saturating_add(hours.saturating_mul(3_600_000)),
    )
}

/// Prints an enrolment code as text or `{"laestab", "code"}`.
fn print_code(
    out: &mut impl Write,
    config: &Config,
    laestab: Laestab,
    code: &str,
    roles: &[Role],
    json: bool,
    what: &str,
) -> anyhow::Result<()> {
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "laestab": laestab.to_string(), "code": code, "roles": roles })
        )?;
    } else {
        writeln!(
            out,
            "{what} {laestab}; one-time enrolment code for a key with role(s) {} (valid {} hours):",
            roles.join(", "),
            config.enrolment_code_hours
        )?;
        writeln!(out, "{code}")?;
    }
    Ok(())
}
