//! `baton send`: read and validate every pack folder, CTF file or
//! spreadsheet first (nothing is sent if anything is invalid), then seal each into the outbox and upload it, a few at a time.
//! The outbox journal makes a re-run after any failure safe: what the server
//! already holds is not sent again, and a pack sealed but not confirmed is
//! re-sent with the same bytes under the same id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::api::v1;
use baton::crypto::{self, Draft, Identity};
use baton::keys::SchoolKey;
use baton::pack::{Kind, Manifest, PackId, SignedHeader};
use tokio::io::AsyncReadExt as _;

use crate::connect::{Authed, connect, explain};
use crate::home::Home;
use crate::outbox::{Entry, Outbox, State};
use crate::output::{now_ms, progress};
use crate::pins::{Pins, refresh};
use crate::sources::{Gathered, Item, Options};

/// Upload chunk size: well under the gRPC message limit.
const CHUNK: usize = 256 * 1024;

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
    /// Send the other pupils when some have no school destination (XXXXXXX, MMMMMMM).
    #[arg(long)]
    skip_unaddressed: bool,
    /// Send the valid pupils when some are invalid, listing what was skipped.
    #[arg(long)]
    skip_invalid: bool,
    /// Pack folders: each holds record.json and any attachments.
    #[arg(value_name = "PACKDIR", required_unless_present_any = ["ctf", "csv"])]
    packs: Vec<PathBuf>,
}

/// What happened to one pack.
enum Outcome {
    Sent,
    AlreadySent,
}

/// Runs `baton send`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
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
    for item in gathered.items.iter().filter(|i| i.to.is_none()) {
        gathered.problems.push(format!(
            "{}: --to LAESTAB is needed for pack folders",
            item.source
        ));
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
                "{} pupil(s) have no school destination: nothing was sent (--skip-unaddressed sends the others)",
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
    let mut clients = connect(home).await?;
    let mut pins = Pins::load(home)?;
    let mut recipients: HashMap<Laestab, Arc<Vec<SchoolKey>>> = HashMap::new();
    let mut destinations: Vec<Laestab> = items.iter().filter_map(|i| i.to).collect();
    destinations.sort();
    destinations.dedup();
    for to in destinations {
        refresh(home, &mut clients, &mut pins, &to).await?;
        recipients.insert(to, Arc::new(pins.recipients(&to)?));
    }
    let outbox = Arc::new(Outbox::open(home)?);

    let bar = progress(items.len() as u64, "sending");
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut per_destination: HashMap<Laestab, usize> = HashMap::new();
    for item in items {
        let Some(to) = item.to else { continue };
        *per_destination.entry(to).or_default() += 1;
        let job = Job {
            from: config.school,
            to,
            kind: args.kind,
            identity: Arc::clone(&identity),
            recipients: Arc::clone(&recipients[&to]),
            outbox: Arc::clone(&outbox),
            exchange: clients.exchange.clone(),
            item,
        };
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let source = job.item.source.clone();
            (source, job.run().await)
        });
    }
    let (mut sent, mut already, mut failed) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (source, result) = joined.context("a send task failed")?;
        bar.inc(1);
        match result {
            Ok(Outcome::Sent) => sent += 1,
            Ok(Outcome::AlreadySent) => already += 1,
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("{source}: {e:#}"));
            }
        }
    }
    bar.finish_and_clear();
    let mut to: Vec<String> = per_destination
        .iter()
        .map(|(l, n)| format!("{n} to {l}"))
        .collect();
    to.sort();
    println!(
        "sent {sent}, already sent {already}, failed {failed} ({})",
        to.join(", ")
    );
    if failed > 0 {
        bail!("{failed} pack(s) were not sent; run the same command again to retry them");
    }
    Ok(())
}

struct Job {
    item: Item,
    from: Laestab,
    to: Laestab,
    kind: Kind,
    identity: Arc<Identity>,
    recipients: Arc<Vec<SchoolKey>>,
    outbox: Arc<Outbox>,
    exchange: baton::api::v1::exchange_client::ExchangeClient<Authed>,
}

/// A pack sealed into a temporary file in the outbox, not yet kept.
struct Sealed {
    header: SignedHeader,
    /// The manifest with the SHA-256 of every attachment as sealed.
    manifest: Manifest,
    file: tempfile::NamedTempFile,
}

impl Job {
    /// Seals the pack (reading each attachment once), then looks its content
    /// up in the outbox: a pack sent before is not sent again, and one
    /// sealed before but not sent is sent as it was sealed (same id, same
    /// bytes), so a rerun after any failure retries rather than duplicates.
    async fn run(self) -> Result<Outcome> {
        let manifest = Manifest {
            record: self.item.record.clone(),
            ctf_pupil_xml: self.item.ctf_pupil_xml.clone(),
            attachments: self
                .item
                .attachments
                .iter()
                .map(|(_, m)| m.clone())
                .collect(),
        };
        let sealed = self.seal(manifest).await?;
        let key = Outbox::content_key(self.to.as_str(), self.kind, &sealed.manifest);
        let entry = match self.outbox.get(&key)? {
            Some(e) if e.state == State::Sent => return Ok(Outcome::AlreadySent),
            Some(e) if self.outbox.sealed_path(&key).exists() => e,
            _ => self.keep(key, sealed)?,
        };
        upload(&self.outbox, self.exchange, entry).await
    }

    async fn seal(&self, mut manifest: Manifest) -> Result<Sealed> {
        let draft = Draft {
            pack_id: PackId::new(),
            from: self.from,
            to: self.to,
            kind: self.kind,
            created_at_ms: now_ms(),
        };
        let files: Vec<PathBuf> = self
            .item
            .attachments
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        let identity = Arc::clone(&self.identity);
        let recipients = Arc::clone(&self.recipients);
        let dir = self.outbox.dir().to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let file = tempfile::NamedTempFile::new_in(&dir)?;
            let writer = std::io::BufWriter::new(file.as_file().try_clone()?);
            let (header, writer) = crypto::seal(
                &draft,
                &mut manifest,
                |i| std::fs::File::open(&files[i]).map(std::io::BufReader::new),
                &recipients,
                &identity,
                writer,
            )?;
            writer
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            Ok(Sealed {
                header,
                manifest,
                file,
            })
        })
        .await
        .context("sealing was interrupted")?
        .context("sealing")
    }

    /// Keeps a freshly sealed pack in the outbox under its content key.
    fn keep(&self, key: String, sealed: Sealed) -> Result<Entry> {
        let path = self.outbox.sealed_path(&key);
        sealed
            .file
            .persist(&path)
            .with_context(|| format!("keeping {}", path.display()))?;
        let r = &self.item.record;
        let mut entry = Entry {
            key,
            pack_id: sealed.header.header().pack_id.to_string(),
            to: self.to.to_string(),
            kind: self.kind,
            upn: r.upn().map(|u| u.to_string()).unwrap_or_default(),
            name: format!("{} {}", r.forename, r.surname),
            source: self.item.source.clone(),
            header: String::new(),
            state: State::Sealed,
            sent_at_ms: None,
        };
        entry.set_header(&sealed.header);
        self.outbox.put(&entry)?;
        Ok(entry)
    }
}

/// Uploads a sealed outbox entry and marks it sent.
async fn upload(
    outbox: &Outbox,
    mut exchange: baton::api::v1::exchange_client::ExchangeClient<Authed>,
    mut entry: Entry,
) -> Result<Outcome> {
    let header = v1::PackHeader::from(&entry.signed_header()?);
    let path = outbox.sealed_path(&entry.key);
    let mut file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let first = v1::UploadRequest {
            part: Some(v1::upload_request::Part::Header(header)),
        };
        if tx.send(first).await.is_err() {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                let n = file.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok::<(), std::io::Error>(());
            }
            buf.truncate(filled);
            let chunk = v1::UploadRequest {
                part: Some(v1::upload_request::Part::Chunk(buf)),
            };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    });
    let result = exchange
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader
        .await
        .context("reading the sealed pack was interrupted")?
        .context("reading the sealed pack")?;
    match result {
        Ok(_) => {
            entry.state = State::Sent;
            entry.sent_at_ms = Some(now_ms());
            outbox.put(&entry)?;
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            Ok(Outcome::Sent)
        }
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            outbox.remove(&entry.key)?;
            bail!(
                "the destination's keys changed since this pack was sealed ({}); run the command again to re-seal it",
                status.message()
            )
        }
        Err(status) => bail!("upload refused: {}", explain(&status)),
    }
}
