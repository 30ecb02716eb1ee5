//! `baton pull`: download packs, verify the sender's signature against the
//! pinned keys, decrypt, and write each as a pack folder
//! `OUT/<from>/<UPN>/` (`OUT/<from>/safeguarding/<UPN>/` for a
//! child-protection file) with a `pack.json`. A folder appears only once
//! everything in it is verified: a half-written pupil folder never exists.
//! A further pack for the same pupil goes to `<UPN>-<the last 12 hex digits
//! of its pack id>`, a name no other pack shares and that never changes, so
//! pulling the same pack again finds its folder and says so. The server
//! hears that a pack was downloaded (`ConfirmDownloads`) only once its folder
//! is in place ([`confirm`]). `--ctf-dir` is in [`mis`].

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use baton::crypto::{self, Identity, Sink};
use baton::keys::KeyId;
use baton::pack::{AttachmentMeta, Kind, PackId, SignedHeader};
use serde::Serialize;

/// Download calls under way ahead of the pack being opened.
pub(crate) const CONCURRENCY: usize = 4;

use crate::commands::inbox::Waiting;
use crate::connect::{Clients, connect};
use crate::home::{Home, create_private_dir_all, create_private_file, read_json};
use crate::output::{json, now_ms, progress, time};
use crate::packdir::Staging;
use crate::pins::{Pins, refresh_once};

mod confirm;
mod fetch;
pub(crate) use fetch::{STALL, download};
mod forwarded;
mod journal;
mod mis;
#[cfg(all(test, feature = "server"))]
#[allow(clippy::unwrap_used)]
mod older;

pub use journal::{AttachmentJson, PackJson, Pulled, PulledPack};

/// Download, verify and decrypt packs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pack ids to pull (see `baton inbox`).
    #[arg(value_name = "ID", required_unless_present = "all")]
    ids: Vec<PackId>,
    /// Pull everything in the inbox.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Where to write pack folders.
    #[arg(long)]
    out: PathBuf,
    /// Also write, per sending school, one CTF for the MIS to import
    /// (`<src>_CTF_<dest>_<nnn>.xml`, each `<Pupil>` as the sender's MIS
    /// wrote it): one entry per pupil (the newest pack), and never a pupil
    /// already written by an earlier pull.
    #[arg(long, value_name = "DIR")]
    ctf_dir: Option<PathBuf>,
    /// Print a JSON array (one object per pack) instead of text.
    #[arg(long)]
    json: bool,
    /// Pull again a pack this home already pulled and acknowledged. A
    /// sound server never lists it again after its receipt, so without this
    /// such a pack is refused as a replay.
    #[arg(long)]
    again: bool,
}

/// What happened to one pack in this pull.
#[derive(Debug, Serialize)]
struct Outcome {
    id: String,
    from: String,
    kind: String,
    /// `pulled`, `already-pulled` or `failed`.
    state: &'static str,
    folder: Option<String>,
    /// The CTF this pupil was written into, with `--ctf-dir`.
    ctf: Option<String>,
    error: Option<String>,
}

/// Says why `pull --all` leaves the packs not sealed to this device: one
/// line for those already pulled elsewhere, one for child-protection files
/// (the DSL's), one for the rest.
fn skipped(others: &[Waiting], mine: &KeyId) {
    let (downloaded, waiting): (Vec<_>, Vec<_>) =
        others.iter().partition(|w| w.state == "downloaded");
    let (dsl, rest): (Vec<&Waiting>, Vec<&Waiting>) = waiting
        .into_iter()
        .partition(|w| w.header.header().kind == Kind::Safeguarding);
    if !downloaded.is_empty() {
        eprintln!(
            "skipping {} pack(s) already pulled on another of this school's devices",
            downloaded.len()
        );
    }
    if !dsl.is_empty() {
        eprintln!(
            "skipping {} child-protection file(s): they are sealed only to the DSL's keys; the DSL pulls them on their own device",
            dsl.len()
        );
    }
    if !rest.is_empty() {
        eprintln!(
            "skipping {} pack(s) not sealed to this device's key {}: pull them on a device they were sealed to, or, if none has them any more, ask the sender to run `baton send --reseal`",
            rest.len(),
            mine.grouped()
        );
    }
}

/// Runs `baton pull`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let mut clients = connect(home).await?;
    // Each listed pack's ciphertext length (with `--all`), so large packs
    // are downloaded alone from the start.
    let mut lengths: HashMap<PackId, u64> = HashMap::new();
    let ids: Vec<(PackId, i64)> = if args.all {
        let mine: Vec<KeyId> = home.identities()?.iter().map(Identity::key_id).collect();
        let mut listed = crate::commands::inbox::list(&mut clients).await?;
        // Packs withdrawn after they were downloaded cannot be pulled again:
        // say so loudly, with where this home put them.
        if listed
            .iter()
            .any(crate::commands::inbox::Waiting::withdrawn)
        {
            let mut pins = Pins::load(home)?;
            crate::commands::inbox::check_notices(home, &mut clients, &mut pins, &mut listed).await;
            let pulled = Pulled::load(home)?;
            for w in listed.iter().filter(|w| w.withdrawn()) {
                let id = w.header.header().pack_id.to_string();
                let folder = pulled
                    .packs
                    .get(&id)
                    .map(|p| format!(" It was pulled here into {}.", p.folder))
                    .unwrap_or_default();
                eprintln!("{}{folder}", crate::commands::inbox::notice_line(w));
            }
        }
        let (ours, others): (Vec<_>, Vec<_>) = listed
            .into_iter()
            .filter(|w| !w.withdrawn())
            .partition(|w| {
                w.header
                    .header()
                    .recipient_key_ids
                    .iter()
                    .any(|r| mine.contains(r))
            });
        skipped(&others, &mine[0]);
        lengths = ours
            .iter()
            .map(|w| (w.header.header().pack_id, w.header.header().ciphertext_len))
            .collect();
        ours.iter()
            .map(|w| (w.header.header().pack_id, w.uploaded_at_ms))
            .collect()
    } else {
        args.ids.iter().map(|id| (*id, 0)).collect()
    };
    if ids.is_empty() {
        if args.json {
            json(&serde_json::Value::Array(Vec::new()));
        } else {
            println!("nothing to pull");
        }
        return Ok(());
    }
    create_private_dir_all(&args.out)?;
    // Leftovers of a pull that was killed: staged folders and downloaded
    // ciphertext that never became pack folders. (One pull per folder at a time.)
    let staging = args.out.join(".baton-staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    let identity = Arc::new(home.identities()?);
    let mut pins = Pins::load(home)?;
    let mut pulled = Pulled::load(home)?;
    let bar = progress(ids.len() as u64, "pulling");
    let say = |line: String| {
        bar.suspend(|| {
            if args.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        })
    };
    // Downloads run ahead of opening, a few at a time, each into its own
    // file in the staging folder; packs are then opened and written in
    // order, and the server told of each as it is written.
    let staging_root = args.out.join(".baton-staging");
    create_private_dir_all(&staging_root)?;
    let wanted: Vec<(PackId, Option<u64>)> = ids
        .iter()
        .filter(|(id, _)| match pulled.packs.get(&id.to_string()) {
            Some(before) => {
                !holds(Path::new(&before.folder), *id)
                    && (args.again || before.acknowledged_at_ms.is_none())
            }
            None => true,
        })
        .map(|(id, _)| (*id, lengths.get(id).copied()))
        .collect();
    let mut fetches = fetch::start(&clients.exchange, &staging_root, &wanted, STALL);
    let confirms = confirm::Confirmer::start(clients.exchange.clone());
    let mut written = std::collections::HashSet::new();
    let mut outcomes = Vec::new();
    for (id, uploaded_at_ms) in ids {
        let key = id.to_string();
        if !args.again
            && let Some(before) = pulled.packs.get(&key)
            && let Some(acked) = before.acknowledged_at_ms
            && !holds(Path::new(&before.folder), id)
        {
            let why = format!(
                "already pulled and acknowledged here at {}, yet the server offers it again (a replay?); not pulled: `--again` pulls it anyway",
                time(acked)
            );
            say(format!("{id}: {why}"));
            outcomes.push(Outcome {
                id: key,
                from: before.from.clone(),
                kind: before.kind.to_string(),
                state: "failed",
                folder: None,
                ctf: None,
                error: Some(why),
            });
            bar.inc(1);
            continue;
        }
        if let Some(done) = pulled
            .packs
            .get(&key)
            .filter(|p| holds(Path::new(&p.folder), id))
        {
            // A repeat pull: the folder already holds exactly this pack.
            confirms.tell(id, &done.ciphertext_sha256);
            say(format!("{id}: already pulled into {}", done.folder));
            outcomes.push(Outcome::of(id, done, "already-pulled"));
            bar.inc(1);
            continue;
        }
        let fetched = match fetches.remove(&id) {
            Some(told) => told
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a download failed unexpectedly"))),
            None => Err(anyhow::anyhow!("not downloaded")),
        };
        let pulled_one = match fetched {
            Ok(fetched) => {
                pull_one(
                    home,
                    &mut clients,
                    &mut pins,
                    &identity,
                    fetched,
                    uploaded_at_ms,
                    &args.out,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match pulled_one {
            Ok(mut record) => {
                // Pulled before into a folder that has since moved: keep what
                // was recorded (the CTF it went into, its acknowledgement).
                if let Some(before) = pulled.packs.get(&key) {
                    record.ctf.clone_from(&before.ctf);
                    record.acknowledged_at_ms = before.acknowledged_at_ms;
                    record.pulled_at_ms = before.pulled_at_ms;
                }
                // Only now, with the folder in place, is the pack downloaded
                // (told while the next pack is opened).
                confirms.tell(id, &record.ciphertext_sha256);
                written.insert(id);
                say(format!("{id} -> {}", record.folder));
                if let Some(old) = &record.supersedes {
                    let before = pulled
                        .packs
                        .get(old)
                        .map(|p| format!(" (pulled here before into {}: set it aside)", p.folder))
                        .unwrap_or_default();
                    say(format!(
                        "{id}: corrects and replaces pack {old}{before}; its sender signed the link"
                    ));
                }
                outcomes.push(Outcome::of(id, &record, "pulled"));
                pulled.packs.insert(key, record);
                pulled.save(home)?;
            }
            Err(e) => {
                bar.suspend(|| eprintln!("{id}: {e:#}"));
                outcomes.push(Outcome {
                    id: key,
                    from: String::new(),
                    kind: String::new(),
                    state: "failed",
                    folder: None,
                    ctf: None,
                    error: Some(format!("{e:#}")),
                });
            }
        }
        bar.inc(1);
    }
    for id in confirms.finish().await {
        if written.contains(&id) {
            bar.suspend(|| {
                eprintln!(
                    "{id}: written, but the server could not be told; `baton pull {id}` again tells it"
                )
            });
        }
    }
    bar.finish_and_clear();
    // Empty once every pack is published; a failed pack's files were dropped.
    let _ = std::fs::remove_dir(&staging);
    if let Some(dir) = &args.ctf_dir {
        let this_run: Vec<String> = outcomes
            .iter()
            .filter(|o| o.state != "failed")
            .map(|o| o.id.clone())
            .collect();
        let school = home.config()?.school;
        let lines = mis::write(dir, school, &pins, &mut pulled, &this_run)?;
        pulled.save(home)?;
        for line in lines {
            say(line);
        }
        for o in &mut outcomes {
            o.ctf = pulled.packs.get(&o.id).and_then(|p| p.ctf.clone());
        }
    }
    if args.json {
        json(&serde_json::to_value(&outcomes)?);
    }
    let failed = outcomes.iter().filter(|o| o.state == "failed").count();
    if failed > 0 {
        bail!("{failed} pack(s) could not be pulled; nothing was written for them");
    }
    Ok(())
}

impl Outcome {
    fn of(id: PackId, p: &PulledPack, state: &'static str) -> Self {
        Self {
            id: id.to_string(),
            from: p.from.clone(),
            kind: p.kind.to_string(),
            state,
            folder: Some(p.folder.clone()),
            ctf: p.ctf.clone(),
            error: None,
        }
    }
}

/// True when `folder` is a pulled pack folder holding pack `id`.
fn holds(folder: &Path, id: PackId) -> bool {
    read_json::<PackJson>(&folder.join("pack.json")).is_ok_and(|p| p.id == id.to_string())
}

/// Where pack `id` for pupil folder `name` goes under `parent`: `name` if it
/// is free (or already holds this pack), else `name-<the pack id's random
/// tail>`, which no other pack of the same pupil shares and which does not
/// change between pulls.
fn folder_for(parent: &Path, name: &str, id: PackId) -> PathBuf {
    let plain = parent.join(name);
    if !plain.exists() || holds(&plain, id) {
        return plain;
    }
    let text = id.to_string();
    let tail = &text[text.len() - 12..];
    let suffixed = parent.join(format!("{name}-{tail}"));
    if !suffixed.exists() || holds(&suffixed, id) {
        return suffixed;
    }
    parent.join(format!("{name}-{text}"))
}

/// Opens a downloaded pack (`fetched`: its ciphertext and header) into a
/// pack folder under `out`, checking it whole first.
async fn pull_one(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    identity: &Arc<Vec<Identity>>,
    fetched: (tempfile::NamedTempFile, SignedHeader),
    uploaded_at_ms: i64,
    out: &Path,
) -> Result<PulledPack> {
    let (ciphertext, header) = fetched;
    let h = header.header().clone();
    let id = h.pack_id;
    // The sender's keys (an escrow's, for a forwarded pack, whose record
    // is the original sender's) as the directory lists them now, once a
    // run (a key revoked since is known; a new key is refused if it is a
    // change).
    let (author, signer) = match &h.forwarded {
        Some(f) => forwarded::author(home, clients, pins, &h, f, ciphertext.path()).await?,
        None => {
            refresh_once(home, clients, pins, &h.from).await?;
            (h.from, h.from.to_string())
        }
    };
    let sender_keys = pins.verifying_keys_of(&signer)?;
    if let Some(revoked) = pins.revoked_at_of(&signer, h.sender_key_id)
        && h.created_at_ms > revoked
    {
        bail!(
            "signed by key {} of {} after that key was revoked ({}); not pulled",
            h.sender_key_id.grouped(),
            h.from,
            time(revoked)
        );
    }

    let staging = Staging::new(out, &id.to_string())?;
    let dir = staging.path().to_path_buf();
    // The current identity, or a retired one the pack was sealed to.
    let which = identity
        .iter()
        .position(|i| h.recipient_key_ids.contains(&i.key_id()))
        .unwrap_or(0);
    let identities = Arc::clone(identity);
    let path = ciphertext.path().to_path_buf();
    let opened_header = header.clone();
    let manifest = tokio::task::spawn_blocking(move || -> Result<_> {
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        let mut sink = DirSink { dir };
        let identity = identities.get(which).context("this home has no identity")?;
        Ok(crypto::open(
            &opened_header,
            &sender_keys,
            identity,
            file,
            &mut sink,
        )?)
    })
    .await
    .context("opening was interrupted")??;

    // The sender's signature says who sent it, not that it is sound: the
    // record must pass the checks `baton send` makes before it is written.
    let problems = manifest
        .record
        .problems(time::OffsetDateTime::now_utc().date());
    if !problems.is_empty() {
        let listed: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.problem))
            .collect();
        bail!(
            "the record in this pack does not pass the checks a sender makes ({}); nothing was written: ask {} to correct and send it again",
            listed.join("; "),
            h.from
        );
    }
    let record_json = manifest.record.to_json();
    create_private_file(&staging.path().join("record.json"))?.write_all(record_json.as_bytes())?;
    let pack_json = PackJson {
        id: id.to_string(),
        from: author.to_string(),
        to: h.to.to_string(),
        kind: h.kind,
        created_at: time(h.created_at_ms),
        sent_at: time(uploaded_at_ms),
        pulled_at: time(now_ms()),
        signing_key_id: h
            .forwarded
            .as_ref()
            .map_or(h.sender_key_id, |f| f.original.header().sender_key_id)
            .to_string(),
        via: h.forwarded.as_ref().map(|_| signer.clone()),
        original_id: h
            .forwarded
            .as_ref()
            .map(|f| f.original.header().pack_id.to_string()),
        verified: true,
        attachments: manifest
            .attachments
            .iter()
            .map(|a| AttachmentJson {
                name: a.name.clone(),
                media_type: a.media_type.clone(),
                size: a.size,
                sha256: hex::encode(a.sha256),
            })
            .collect(),
        ctf_pupil_xml: manifest.ctf_pupil_xml.clone(),
        supersedes: h.supersedes.map(|id| id.to_string()),
    };
    let mut f = create_private_file(&staging.path().join("pack.json"))?;
    f.write_all(serde_json::to_string_pretty(&pack_json)?.as_bytes())?;

    let upn = manifest.record.upn().map(|u| u.to_string());
    let mut parent = out.join(author.as_str());
    if h.kind == Kind::Safeguarding {
        parent = parent.join("safeguarding");
    }
    let target = folder_for(&parent, upn.as_deref().unwrap_or("unknown-upn"), id);
    if !holds(&target, id) {
        staging.publish(&target)?;
    }
    Ok(PulledPack {
        from: author.to_string(),
        kind: h.kind,
        ciphertext_sha256: hex::encode(h.ciphertext_sha256),
        pulled_at_ms: now_ms(),
        folder: target.display().to_string(),
        acknowledged_at_ms: None,
        upn: upn.unwrap_or_default(),
        created_at_ms: h.created_at_ms,
        ctf: None,
        supersedes: h.supersedes.map(|id| id.to_string()),
        to: h.to.to_string(),
    })
}

/// Writes attachments into the staging folder.
struct DirSink {
    dir: PathBuf,
}

impl Sink for DirSink {
    fn create(
        &mut self,
        _index: usize,
        meta: &AttachmentMeta,
    ) -> std::io::Result<Box<dyn std::io::Write + '_>> {
        // Names were checked (plain file names, unique) when the manifest was read.
        let file = create_private_file(&self.dir.join(&meta.name))?;
        Ok(Box::new(std::io::BufWriter::new(file)))
    }
}
