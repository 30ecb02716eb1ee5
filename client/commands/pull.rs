//! `baton pull`: download packs, verify the sender's signature against the
//! pinned keys, decrypt, and write each as a pack folder
//! `OUT/<from>/<UPN>/` (`OUT/<from>/safeguarding/<UPN>/` for a
//! child-protection file) with a `pack.json`. A folder appears only once
//! everything in it is verified: a half-written pupil folder never exists.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::api::v1;
use baton::crypto::{self, Identity, Sink};
use baton::pack::{AttachmentMeta, Kind, PackId, SignedHeader};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::connect::{Clients, connect, explain};
use crate::home::{Home, read_json, write_json};
use crate::output::{now_ms, progress, time};
use crate::packdir::Staging;
use crate::pins::{Pins, refresh};

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
    /// (`<src>_CTF_<dest>_<nnn>.xml`, each `<Pupil>` as the sender's MIS wrote it).
    #[arg(long, value_name = "DIR")]
    ctf_dir: Option<PathBuf>,
}

/// What this home pulled (`pulled.json`), for `baton ack`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pulled {
    /// By pack id.
    pub packs: BTreeMap<String, PulledPack>,
}

/// One pulled pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PulledPack {
    /// Sending school.
    pub from: String,
    /// Kind.
    pub kind: Kind,
    /// Ciphertext SHA-256, hex (what the receipt states).
    pub ciphertext_sha256: String,
    /// When it was pulled.
    pub pulled_at_ms: i64,
    /// The folder written.
    pub folder: String,
    /// When it was acknowledged, once it is.
    pub acknowledged_at_ms: Option<i64>,
}

/// What `pack.json` in a pulled folder says.
#[derive(Debug, Serialize, Deserialize)]
pub struct PackJson {
    /// Pack id.
    pub id: String,
    /// Sending school.
    pub from: String,
    /// Destination school.
    pub to: String,
    /// Kind.
    pub kind: Kind,
    /// When the sender sealed it.
    pub created_at: String,
    /// When the server received it.
    pub sent_at: String,
    /// When it was pulled here.
    pub pulled_at: String,
    /// The sender's signing key.
    pub signing_key_id: String,
    /// Signature checked against the pinned key and every hash matched.
    pub verified: bool,
    /// The attachments, in the pack's order, each checked against its size
    /// and SHA-256 (absent from folders pulled by older versions).
    #[serde(default)]
    pub attachments: Vec<AttachmentJson>,
    /// The pupil's `<Pupil>` element exactly as the sender's MIS wrote it, if the pack came from a CTF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctf_pupil_xml: Option<String>,
}

/// One attachment as `pack.json` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttachmentJson {
    /// The file's name in the folder.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex, as sealed by the sender and checked on opening.
    pub sha256: String,
}

impl Pulled {
    /// Loads `pulled.json`.
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.path("pulled.json");
        if path.exists() {
            read_json(&path)
        } else {
            Ok(Self::default())
        }
    }

    /// Saves it.
    pub fn save(&self, home: &Home) -> Result<()> {
        write_json(&home.path("pulled.json"), self)
    }
}

/// Runs `baton pull`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    let mut clients = connect(home).await?;
    let ids: Vec<(PackId, i64)> = if args.all {
        crate::commands::inbox::list(&mut clients)
            .await?
            .iter()
            .map(|w| (w.header.header().pack_id, w.uploaded_at_ms))
            .collect()
    } else {
        args.ids.iter().map(|id| (*id, 0)).collect()
    };
    if ids.is_empty() {
        println!("nothing to pull");
        return Ok(());
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Leftovers of a pull that was killed: staged folders and downloaded
    // ciphertext that never became pack folders. (One pull per folder at a time.)
    let staging = args.out.join(".baton-staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    let identity = Arc::new(home.identity()?);
    let mut pins = Pins::load(home)?;
    let mut pulled = Pulled::load(home)?;
    let bar = progress(ids.len() as u64, "pulling");
    let mut failed = 0;
    let mut for_mis: BTreeMap<Laestab, Vec<String>> = BTreeMap::new();
    for (id, uploaded_at_ms) in ids {
        match pull_one(
            home,
            &mut clients,
            &mut pins,
            &identity,
            id,
            uploaded_at_ms,
            &args.out,
        )
        .await
        {
            Ok((record, written)) => {
                if record.kind == Kind::Transfer
                    && let Ok(from) = Laestab::parse(&record.from)
                {
                    for_mis.entry(from).or_default().push(pupil_xml(&written)?);
                }
                bar.suspend(|| println!("{id} -> {}", written.display()));
                pulled.packs.insert(id.to_string(), record);
                pulled.save(home)?;
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("{id}: {e:#}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Empty once every pack is published; a failed pack's files were dropped.
    let _ = std::fs::remove_dir(&staging);
    if let Some(dir) = &args.ctf_dir {
        let school = home.config()?.school;
        for (from, pupils) in &for_mis {
            let name = pins.get(from).map(|p| p.name.clone()).unwrap_or_default();
            let path = write_ctf(dir, *from, &name, school, pupils)?;
            println!(
                "{} pupil(s) from {from} -> {}",
                pupils.len(),
                path.display()
            );
        }
    }
    if failed > 0 {
        bail!("{failed} pack(s) could not be pulled; nothing was written for them");
    }
    Ok(())
}

/// The `<Pupil>` element for a pulled folder: as the sender's MIS wrote it,
/// or generated from the record for packs that came from a spreadsheet or
/// a pack folder.
fn pupil_xml(folder: &Path) -> Result<String> {
    let pack: PackJson = read_json(&folder.join("pack.json"))?;
    if let Some(xml) = pack.ctf_pupil_xml {
        return Ok(xml);
    }
    let text = std::fs::read_to_string(folder.join("record.json"))
        .with_context(|| format!("reading {}", folder.join("record.json").display()))?;
    let record = baton::record::TransitionRecord::from_json(&text)
        .with_context(|| format!("{} is not valid", folder.join("record.json").display()))?;
    Ok(baton::ctf::pupil_xml_from_record(&record))
}

/// Writes one CTF for one sending school, numbered after any already there.
fn write_ctf(
    dir: &Path,
    from: Laestab,
    name: &str,
    to: Laestab,
    pupils: &[String],
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = (1..1000)
        .map(|n| dir.join(baton::ctf::file_name(from, to, n)))
        .find(|p| !p.exists())
        .with_context(|| format!("{} already holds 999 CTFs from {from}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let mut header = baton::ctf::CtfHeader::new(
        from,
        baton::Destination::School(to),
        time::PrimitiveDateTime::new(now.date(), now.time()),
    );
    header.source.name = name.to_string();
    let mut bytes = Vec::new();
    baton::ctf::write_ctf(&mut bytes, &header, pupils).context("writing the CTF")?;
    crate::home::write_atomic(&path, &bytes, false)?;
    Ok(path)
}

async fn pull_one(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    identity: &Arc<Identity>,
    id: PackId,
    uploaded_at_ms: i64,
    out: &Path,
) -> Result<(PulledPack, PathBuf)> {
    let staging_root = out.join(".baton-staging");
    std::fs::create_dir_all(&staging_root)
        .with_context(|| format!("creating {}", staging_root.display()))?;
    let ciphertext = tempfile::NamedTempFile::new_in(&staging_root)?;
    let header = download(clients, id, ciphertext.path()).await?;
    let h = header.header().clone();
    // Ask the directory only when the signer is not pinned yet (a new
    // school, or a new key, which `refresh` refuses if it is a change).
    let pinned = pins
        .verifying_keys(&h.from)
        .is_ok_and(|keys| keys.iter().any(|k| k.key_id() == h.sender_key_id));
    if !pinned {
        refresh(home, clients, pins, &h.from).await?;
    }
    let sender_keys = pins.verifying_keys(&h.from)?;

    let staging = Staging::new(out, &id.to_string())?;
    let dir = staging.path().to_path_buf();
    let identity = Arc::clone(identity);
    let path = ciphertext.path().to_path_buf();
    let opened_header = header.clone();
    let manifest = tokio::task::spawn_blocking(move || -> Result<_> {
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        let mut sink = DirSink { dir };
        Ok(crypto::open(
            &opened_header,
            &sender_keys,
            &identity,
            file,
            &mut sink,
        )?)
    })
    .await
    .context("opening was interrupted")??;

    let record_json = manifest.record.to_json();
    std::fs::write(staging.path().join("record.json"), record_json.as_bytes())?;
    let pack_json = PackJson {
        id: id.to_string(),
        from: h.from.to_string(),
        to: h.to.to_string(),
        kind: h.kind,
        created_at: time(h.created_at_ms),
        sent_at: time(uploaded_at_ms),
        pulled_at: time(now_ms()),
        signing_key_id: h.sender_key_id.to_string(),
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
    };
    let mut f = std::fs::File::create(staging.path().join("pack.json"))?;
    f.write_all(serde_json::to_string_pretty(&pack_json)?.as_bytes())?;

    let folder = match manifest.record.upn() {
        Some(upn) => upn.to_string(),
        None => format!("unknown-upn-{}", &id.to_string()[..8]),
    };
    let mut parent = out.join(h.from.as_str());
    if h.kind == Kind::Safeguarding {
        parent = parent.join("safeguarding");
    }
    let mut target = parent.join(&folder);
    if target.exists() {
        let existing: Option<PackJson> = read_json(&target.join("pack.json")).ok();
        if existing.is_some_and(|p| p.id == id.to_string()) {
            // Pulled before: the folder already holds exactly this pack.
            return Ok((record(&h, &target), target));
        }
        target = parent.join(format!("{folder}-{}", &id.to_string()[..8]));
    }
    staging.publish(&target)?;
    Ok((record(&h, &target), target))
}

fn record(h: &baton::pack::Header, folder: &Path) -> PulledPack {
    PulledPack {
        from: h.from.to_string(),
        kind: h.kind,
        ciphertext_sha256: hex::encode(h.ciphertext_sha256),
        pulled_at_ms: now_ms(),
        folder: folder.display().to_string(),
        acknowledged_at_ms: None,
    }
}

/// Streams a pack's ciphertext into `path`, returning its header.
async fn download(clients: &mut Clients, id: PackId, path: &Path) -> Result<SignedHeader> {
    let mut stream = clients
        .exchange
        .download(v1::DownloadRequest {
            pack_id: id.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("downloading: {}", explain(&s)))?
        .into_inner();
    let mut file = tokio::fs::File::create(path).await?;
    let mut header = None;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("downloading: {}", explain(&s)))?
    {
        match message.part {
            Some(v1::download_response::Part::Header(h)) if header.is_none() => {
                let signed = SignedHeader::try_from(&h)
                    .map_err(|e| anyhow::anyhow!("the server sent a malformed header: {e}"))?;
                if signed.header().pack_id != id {
                    bail!("the server sent a different pack");
                }
                header = Some(signed);
            }
            Some(v1::download_response::Part::Chunk(bytes)) if header.is_some() => {
                file.write_all(&bytes).await?
            }
            _ => bail!("the server's download stream is out of order"),
        }
    }
    file.sync_all().await?;
    header.context("the server sent no header")
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
        let file = std::fs::File::create(self.dir.join(&meta.name))?;
        Ok(Box::new(std::io::BufWriter::new(file)))
    }
}
