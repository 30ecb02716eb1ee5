//! `baton send`: read and validate every pack folder, CTF file or
//! spreadsheet first (nothing is sent if anything is invalid), check every
//! destination and the server's size limit, then seal each pack into the
//! outbox and upload it, a few at a time ([`job`]). The outbox journal makes
//! a re-run after any failure safe: what the server already holds is not
//! sent again, and a pack sealed but not confirmed is re-sent with the same
//! bytes under the same id. A second pack for a pupil already sent to the
//! same school is refused unless `--again` says it is meant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::api::v1;
use baton::keys::{KeyId, SchoolKey};
use baton::pack::{Kind, PackId, recipients_for};

use crate::connect::{Clients, connect};
use crate::home::Home;
use crate::limits::{OVERHEAD, server_limit};
use crate::outbox::{Entry, Outbox, State};
use crate::output::{UsageError, json, progress};
use crate::pins::{KeysChanged, NotEnrolled, Pins, refresh};
use crate::sources::{Gathered, Item, Options};

pub(crate) mod job;

use job::{ByPupil, Job, Outcome};

/// Packs sealed and uploaded at once.
const CONCURRENCY: usize = 4;

/// Send packs: pack folders, CTF files or a class spreadsheet.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The destination school's LAESTAB: required for pack folders; for CTF
    /// and CSV it overrides the file's destination.
    #[arg(long)]
    to: Option<Laestab>,
    /// What the packs are: `safeguarding` packs are sealed only to the destination's DSL keys.
    #[arg(long, default_value = "transfer")]
    kind: Kind,
    /// CTF files exported by the MIS: one pack per pupil, to the file's DestSchool.
    #[arg(long, value_name = "FILE.xml", num_args = 1..)]
    ctf: Vec<PathBuf>,
    /// A class spreadsheet (see `baton template csv`): one pack per row, to its destination column.
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
    /// Attachments for CTF and CSV pupils, in DIR/<UPN>/.
    #[arg(long, value_name = "DIR")]
    attachments: Option<PathBuf>,
    /// Send the other pupils when some have no school destination
    /// (XXXXXXX, MMMMMMM) or their destination is not enrolled in Baton.
    #[arg(long)]
    skip_unaddressed: bool,
    /// Send the valid pupils when some are invalid, listing what was skipped.
    #[arg(long)]
    skip_invalid: bool,
    /// Send a pupil again although a pack for them already went to the same
    /// school (e.g. corrected data); without it such pupils are not sent.
    #[arg(long)]
    again: bool,
    /// Seal again, to the destination's current keys, packs already sent
    /// that nobody there can open any more (their keys were all revoked).
    #[arg(long)]
    reseal: bool,
    /// The day the pupils left (ceased to be registered), YYYY-MM-DD
    /// [default: today]. It is signed into each pack, and the statutory
    /// clock counts from it: 15 school days for a transfer pack, 5 for a
    /// child-protection file.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_left)]
    left: Option<time::Date>,
    /// The id of a pack sent before that this one corrects: the same pupil,
    /// to the same school, of the same kind. Its signed header names the
    /// pack it replaces, the destination is shown which one, and the old
    /// pack is withdrawn (deleted if not yet downloaded). One pupil at a time.
    #[arg(long, value_name = "ID")]
    supersedes: Option<PackId>,
    /// Print a JSON object (counts, and one entry per pack) instead of text.
    #[arg(long)]
    json: bool,
    /// Pack folders: each holds record.json and any attachments.
    #[arg(value_name = "PACKDIR")]
    packs: Vec<PathBuf>,
}

/// A leaving date: `YYYY-MM-DD`, not before 2000 and at most a year ahead.
fn parse_left(text: &str) -> Result<time::Date, String> {
    let date = baton::dates::parse_ymd(text.trim())
        .map_err(|e| format!("{text:?} is not a date YYYY-MM-DD ({e})"))?;
    let today = time::OffsetDateTime::now_utc().date();
    let year_ahead = today
        .checked_add(time::Duration::days(366))
        .unwrap_or(today);
    if date.year() < 2000 || date > year_ahead {
        return Err(format!(
            "{text}: a leaving date is between 2000-01-01 and a year from today"
        ));
    }
    Ok(date)
}

/// Counts for one destination.
#[derive(Default, serde::Serialize)]
struct Tally {
    sent: usize,
    already_sent: usize,
    not_sent: usize,
    failed: usize,
}

/// Runs `baton send`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    if args.packs.is_empty() && args.ctf.is_empty() && args.csv.is_none() {
        return Err(UsageError(
            "nothing to send: give pack folders (with --to LAESTAB), --ctf FILE.xml... or --csv FILE.csv"
                .into(),
        )
        .into());
    }
    let config = home.config()?;
    let opts = Options {
        to: args.to,
        attachments: args.attachments.as_deref(),
        school: Some(config.school),
        today: time::OffsetDateTime::now_utc().date(),
    };
    if let Some(dir) = &args.attachments
        && !dir.is_dir()
    {
        bail!("--attachments {}: not a folder", dir.display());
    }
    let mut gathered = Gathered::default();
    gathered.pack_dirs(&args.packs, &opts);
    gathered.ctf_files(&args.ctf, &opts);
    if let Some(csv) = &args.csv {
        gathered.csv_file(csv, &opts);
    }
    gathered.check_duplicates(0);
    gathered.check_addresses(config.school);

    // One connection for everything; if the server is down, one line says so.
    let mut clients = connect(home).await?;
    if let Some(limit) = server_limit(&mut clients).await? {
        gathered.check_sizes(limit, OVERHEAD);
    }
    let mut pins = Pins::load(home)?;
    let mut destinations: Vec<Laestab> = gathered.items.iter().filter_map(|i| i.to).collect();
    destinations.sort();
    destinations.dedup();
    let mut recipients: HashMap<Laestab, Arc<Vec<SchoolKey>>> = HashMap::new();
    let mut refused: BTreeMap<Laestab, String> = BTreeMap::new();
    for to in destinations {
        match destination(home, &mut clients, &mut pins, to, args.kind).await {
            Ok(keys) => {
                recipients.insert(to, Arc::new(keys));
            }
            Err(e) if e.downcast_ref::<NotEnrolled>().is_some() => {
                gathered.not_enrolled(to, &e.to_string());
            }
            Err(e) if e.downcast_ref::<KeysChanged>().is_some() => {
                refused.insert(to, format!("{e:#}"));
            }
            Err(e) if e.downcast_ref::<NoKeys>().is_some() => {
                refused.insert(to, format!("{e:#}"));
            }
            Err(e) => return Err(e),
        }
    }

    for w in &gathered.warnings {
        eprintln!("warning: {w}");
    }
    if !gathered.problems.is_empty() {
        for p in &gathered.problems {
            eprintln!("{p}");
        }
        if !args.skip_invalid {
            bail!(
                "{} problem(s): nothing was sent (fix them, or --skip-invalid to send the rest)",
                gathered.problems.len()
            );
        }
        eprintln!("skipping the pupils above (--skip-invalid)");
    }
    if !gathered.unaddressed.is_empty() {
        for u in &gathered.unaddressed {
            eprintln!("{u}");
        }
        eprintln!("{}", crate::sources::UNADDRESSED_HINT);
        if !args.skip_unaddressed {
            bail!(
                "{} pupil(s) have no enrolled school destination: nothing was sent (--skip-unaddressed sends the others)",
                gathered.unaddressed.len()
            );
        }
        eprintln!(
            "not sending those {} pupil(s) (--skip-unaddressed)",
            gathered.unaddressed.len()
        );
    }
    let items: Vec<Item> = gathered
        .items
        .into_iter()
        .filter(|i| i.to.is_some())
        .collect();
    if args.kind == Kind::Transfer {
        let flagged = items.iter().filter(|i| i.record.safeguarding_file).count();
        if flagged > 0 {
            eprintln!(
                "note: {flagged} record(s) say a child-protection file exists; the DSL sends it separately with --kind safeguarding"
            );
        }
    }

    let identity = Arc::new(home.identity()?);
    let outbox = Arc::new(Outbox::open(home)?);
    let _lock = outbox.lock()?;
    let journal = outbox.entries()?;
    // A correction keeps the leaving date of the pack it corrects unless
    // told otherwise: the statutory clock counts from the day the pupil left.
    let mut left = args.left;
    if let Some(old) = args.supersedes {
        let first_left = check_supersedes(old, &items, args.kind, &journal)?;
        left = left.or(first_left);
    }
    let earlier = Arc::new(by_pupil(&outbox, &journal));
    let stranded_ids = Arc::new(stranded(&mut clients, &journal, &recipients).await?);
    let bar = progress(items.len() as u64, "sending");
    // For the local page (`baton ui`), which runs this command: one line
    // per pack done, on standard error.
    let report_progress = std::env::var_os("BATON_PROGRESS_LINES").is_some();
    let total = items.len();
    let mut done = 0usize;
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut tally: BTreeMap<Laestab, Tally> = BTreeMap::new();
    let mut results: Vec<serde_json::Value> = Vec::new();
    for item in items {
        let Some(to) = item.to else { continue };
        let Some(keys) = recipients.get(&to) else {
            tally.entry(to).or_default().failed += 1;
            results.push(
                serde_json::json!({"source": item.source, "to": to, "state": "failed",
                "error": refused.get(&to).cloned().unwrap_or_default()}),
            );
            continue;
        };
        let job = Job {
            from: config.school,
            to,
            kind: args.kind,
            identity: Arc::clone(&identity),
            recipients: Arc::clone(keys),
            outbox: Arc::clone(&outbox),
            earlier: Arc::clone(&earlier),
            again: args.again,
            reseal: args.reseal,
            left_on: left,
            supersedes: args.supersedes,
            stranded: Arc::clone(&stranded_ids),
            exchange: clients.exchange.clone(),
            item,
        };
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let source = job.item.source.clone();
            (source, to, job.run().await)
        });
    }
    // Failures grouped by message: a server that went away is one line.
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut book = crate::checkpoint::Book::load(home)?;
    let mut retry_helps = false;
    let (mut duplicates, mut stranded) = (Vec::new(), 0usize);
    let mut unchanged = std::collections::HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (source, to, result) = joined.context("a send task failed")?;
        bar.inc(1);
        done += 1;
        if report_progress {
            eprintln!("progress {done}/{total}");
        }
        let t = tally.entry(to).or_default();
        let (state, error) = match result {
            Ok(Outcome::Sent(checkpoint)) => {
                book.observe(checkpoint.as_ref());
                t.sent += 1;
                ("sent", None)
            }
            Ok(Outcome::AlreadySent) => {
                t.already_sent += 1;
                ("already-sent", None)
            }
            Ok(Outcome::Unchanged) => {
                t.already_sent += 1;
                unchanged.insert(source.clone());
                ("already-sent", None)
            }
            Ok(Outcome::Stranded) => {
                t.already_sent += 1;
                stranded += 1;
                ("already-sent", None)
            }
            Ok(Outcome::Duplicate(first)) => {
                t.not_sent += 1;
                duplicates.push(if first.state == State::Sent {
                    format!(
                        "{source}: this pupil was already sent to {to} (pack {}, from {})",
                        first.pack_id, first.source
                    )
                } else {
                    format!(
                        "{source}: a pack for this pupil to {to} was sealed but its send did not finish (pack {}, from {}): run that send again to send it",
                        first.pack_id, first.source
                    )
                });
                ("not-sent", Some("already sent to this school".to_string()))
            }
            Err(f) => {
                t.failed += 1;
                retry_helps |= f.retry;
                failures
                    .entry(f.message.clone())
                    .or_default()
                    .push(source.clone());
                ("failed", Some(f.message))
            }
        };
        let mut result =
            serde_json::json!({"source": source, "to": to, "state": state, "error": error});
        if unchanged.contains(&source) {
            // Recognised from the files' stamps, without sealing again.
            result["unchanged"] = serde_json::Value::Bool(true);
        }
        results.push(result);
    }
    bar.finish_and_clear();
    let audit = book.finish(home);
    for (to, why) in &refused {
        eprintln!("{to}: {why}");
    }
    for (message, sources) in &failures {
        match sources.as_slice() {
            [one] => eprintln!("{one}: {message}"),
            many => eprintln!("{} pack(s): {message}", many.len()),
        }
    }
    for d in &duplicates {
        eprintln!("{d}");
    }
    if !duplicates.is_empty() {
        eprintln!(
            "{} pupil(s) not sent: a pack for each already went to the same school; `--again` sends a second pack",
            duplicates.len()
        );
    }
    if stranded > 0 {
        eprintln!(
            "{stranded} pack(s) sent before were sealed only to keys the school has since revoked, so nobody there can open them: `--reseal` sends them again to its current keys"
        );
    }
    let total = tally.values().fold(Tally::default(), |mut a, t| {
        a.sent += t.sent;
        a.already_sent += t.already_sent;
        a.not_sent += t.not_sent;
        a.failed += t.failed;
        a
    });
    if args.json {
        json(
            &serde_json::json!({"sent": total.sent, "already_sent": total.already_sent,
            "not_sent": total.not_sent, "failed": total.failed,
            "destinations": tally.iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>(),
            "packs": results}),
        );
    } else {
        if tally.len() > 1 {
            for (to, t) in &tally {
                println!(
                    "{to}: sent {}, already sent {}, not sent {}, failed {}",
                    t.sent, t.already_sent, t.not_sent, t.failed
                );
            }
        }
        let to: Vec<String> = tally
            .iter()
            .map(|(l, t)| format!("{} to {l}", t.sent + t.already_sent + t.not_sent + t.failed))
            .collect();
        println!(
            "sent {}, already sent {}, failed {} ({})",
            total.sent,
            total.already_sent,
            total.failed,
            to.join(", ")
        );
    }
    if total.failed > 0 {
        audit?;
        if retry_helps {
            bail!(
                "{} pack(s) were not sent; run the same command again to retry them (what was sent is not sent twice)",
                total.failed
            );
        }
        bail!(
            "{} pack(s) were not sent: see the reasons above; running the command again will not help until they are dealt with",
            total.failed
        );
    }
    if total.not_sent > 0 {
        bail!("{} pupil(s) were not sent (see above)", total.not_sent);
    }
    audit
}

/// A correction (`--supersedes OLD`) is one pupil's pack, and OLD is a pack
/// this home sent for the same pupil to the same school, of the same kind:
/// the server cannot check the pupil (it never knew), so the sender does.
/// Returns OLD's signed leaving date.
fn check_supersedes(
    old: PackId,
    items: &[Item],
    kind: Kind,
    journal: &[Entry],
) -> Result<Option<time::Date>> {
    let [item] = items else {
        return Err(UsageError(format!(
            "--supersedes corrects one pupil's pack; {} pupils were given",
            items.len()
        ))
        .into());
    };
    let Some(first) = journal
        .iter()
        .find(|e| e.pack_id == old.to_string() && e.state == State::Sent)
    else {
        bail!(
            "--supersedes {old}: this home did not send that pack (`baton sent` lists what it sent); correct it from the device that sent it"
        );
    };
    let to = item.to.map(|t| t.to_string()).unwrap_or_default();
    if first.to != to {
        bail!(
            "--supersedes {old}: that pack went to {}, this one to {to}: a correction goes to the same school (to send to another school, `baton recall {old}` and send afresh)",
            first.to
        );
    }
    if first.kind != kind {
        bail!(
            "--supersedes {old}: that pack is a {} pack, this one {kind}",
            first.kind
        );
    }
    if first.upn.is_empty() {
        bail!(
            "--supersedes {old}: this home no longer knows which pupil that pack was for (names are forgotten once a pack is settled), so it cannot check this is the same pupil"
        );
    }
    let upn = item.record.upn().map(|u| u.to_string()).unwrap_or_default();
    if first.upn != upn {
        bail!(
            "{}: --supersedes {old}: that pack was for pupil {}, this record is for {upn}: a correction is for the same pupil",
            item.source,
            first.upn
        );
    }
    Ok(first.signed_header()?.header().left_on)
}

/// The destination has no key a pack of this kind can be sealed to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NoKeys(String);

/// The keys a pack of `kind` to `to` is sealed to, from the pins (refreshed).
async fn destination(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    to: Laestab,
    kind: Kind,
) -> Result<Vec<SchoolKey>> {
    let unapproved = refresh(home, clients, pins, &to).await?;
    let keys = pins.recipients(&to)?;
    if recipients_for(kind, &keys).is_empty() {
        let approved = if pins.directory_key()?.is_some() {
            " approved by the trust's directory key"
        } else {
            ""
        };
        if unapproved > 0 {
            return Err(NoKeys(format!(
                "{to} has no active key{approved}: {unapproved} of its keys await approval; the trust's operator approves each (`batond admin key approve`) once the school has read them its fingerprint, then send again"
            ))
            .into());
        }
        let why = match kind {
            Kind::Safeguarding => format!(
                "{to} has no active DSL key{approved}, and a child-protection file is sealed only to the DSL: ask the school's DSL to enrol (`baton init` with a DSL code from the trust's operator), then send again"
            ),
            Kind::Transfer => format!(
                "{to} has no active key{approved}: ask the school to enrol a device (`baton init`), then send again"
            ),
        };
        return Err(NoKeys(why).into());
    }
    Ok(keys)
}

/// Every pack of the journal that was sent, or was sealed and will be sent
/// by running its send again, by (destination, kind, UPN).
fn by_pupil(outbox: &Outbox, journal: &[Entry]) -> ByPupil {
    let mut map = ByPupil::new();
    for e in journal {
        let counts = match e.state {
            State::Sent => true,
            State::Sealed => outbox.sealed_path(&e.key).exists(),
            State::Failed => false,
        };
        if counts && !e.upn.is_empty() {
            map.entry((e.to.clone(), e.kind, e.upn.clone()))
                .or_default()
                .push(e.clone());
        }
    }
    map
}

/// The packs sent before that nobody at their school can open any more:
/// sealed only to keys it has since revoked, and (the server says) still
/// waiting, not downloaded. Asks the server only when the journal has such
/// packs.
async fn stranded(
    clients: &mut Clients,
    journal: &[Entry],
    recipients: &HashMap<Laestab, Arc<Vec<SchoolKey>>>,
) -> Result<HashSet<String>> {
    let mut candidates = HashSet::new();
    for e in journal {
        let Some(keys) =
            e.to.parse()
                .ok()
                .and_then(|to: Laestab| recipients.get(&to))
        else {
            continue;
        };
        let active: Vec<KeyId> = keys.iter().map(SchoolKey::key_id).collect();
        if e.state == State::Sent && e.stranded(&active) {
            candidates.insert(e.pack_id.clone());
        }
    }
    if candidates.is_empty() {
        return Ok(candidates);
    }
    Ok(crate::commands::sent::list(clients)
        .await?
        .into_iter()
        .filter(|p| p.state == v1::PackState::Pending as i32)
        .filter_map(|p| p.header.map(|h| h.pack_id))
        .filter(|id| candidates.contains(id))
        .collect())
}
