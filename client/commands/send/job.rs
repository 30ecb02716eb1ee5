//! One pack of a send: seal it into the outbox, decide whether it must go
//! (already sent, a second pack for the same pupil, a pack stranded by a key
//! change; for a pupil sent before, decided from the attachments' hashes
//! before sealing), and upload it. Failures say whether running the command again
//! can help.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use baton::Laestab;
use baton::api::v1;
use baton::crypto::{self, Draft, Identity};
use baton::keys::SchoolKey;
use baton::pack::{AttachmentMeta, Kind, Manifest, PackId, SignedHeader};
use tokio::io::AsyncReadExt as _;

use crate::connect::{Authed, explain};
use crate::outbox::{Entry, Outbox, State};
use crate::output::now_ms;
use crate::sources::Item;

/// Upload chunk size: well under the gRPC message limit.
const CHUNK: usize = 256 * 1024;

/// What happened to one pack.
pub enum Outcome {
    /// Uploaded now; the answer's signed audit checkpoint.
    Sent(Option<v1::AuditCheckpoint>),
    /// The server already had this exact pack.
    AlreadySent,
    /// Sent before from the very same files (by their source stamp), so
    /// not even sealed again.
    Unchanged,
    /// Already sent, but sealed only to keys the school has since revoked.
    Stranded,
    /// Not sent: another pack for the same pupil went (or, sealed but not
    /// yet confirmed, is going) to the same school.
    Duplicate(Box<Entry>),
}

/// Why a pack was not sent.
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// Whether running the same command again may succeed.
    pub retry: bool,
}

impl Failure {
    fn retry(e: impl Into<anyhow::Error>) -> Self {
        Self {
            message: format!("{:#}", e.into()),
            retry: true,
        }
    }
}

/// Packs of this home sent, or sealed and waiting to be sent, by
/// (destination, kind, UPN), to notice a second pack for the same pupil.
pub type ByPupil = HashMap<(String, Kind, String), Vec<Entry>>;

/// One pack to seal and send.
pub struct Job {
    /// The pupil.
    pub item: Item,
    /// Our school.
    pub from: Laestab,
    /// The destination.
    pub to: Laestab,
    /// The kind.
    pub kind: Kind,
    /// Our identity.
    pub identity: Arc<Identity>,
    /// The destination's pinned active keys.
    pub recipients: Arc<Vec<SchoolKey>>,
    /// The journal.
    pub outbox: Arc<Outbox>,
    /// Packs sent before, by pupil.
    pub earlier: Arc<ByPupil>,
    /// `--again`: send even when the pupil was sent to this school before.
    pub again: bool,
    /// `--reseal`: send again packs stranded by a key change.
    pub reseal: bool,
    /// `--left`: the day the pupil left (`None`: today).
    pub left_on: Option<time::Date>,
    /// `--supersedes`: the pack this one corrects.
    pub supersedes: Option<PackId>,
    /// Ids of packs sent before that are stranded: still waiting on the
    /// server, and sealed only to keys the destination has revoked.
    pub stranded: Arc<HashSet<String>>,
    /// The exchange client.
    pub exchange: v1::exchange_client::ExchangeClient<Authed>,
}

/// What a pack comes to, by its content key ([`Job::decide`]).
enum Decision {
    /// Nothing to seal or send.
    Done(Outcome),
    /// Sealed before and not yet sent: send those bytes.
    Upload(Box<Entry>),
    /// Seal it, keep it and send it.
    Seal {
        /// A pack sent before and stranded, which this one re-seals.
        stranded: Option<Box<Entry>>,
        /// The id of the pack it replaces, if any.
        replaces: Option<String>,
    },
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
    pub async fn run(self) -> Result<Outcome, Failure> {
        // Sent before from the very same files: nothing to seal or send.
        let stamp = self.stamp();
        if let Some(stamp) = &stamp
            && let Some(key) = self.outbox.stamped(stamp)
            && let Some(e) = self.outbox.get(&key).map_err(Failure::retry)?
            && e.state == State::Sent
            && !self.stranded.contains(&e.pack_id)
        {
            return Ok(Outcome::Unchanged);
        }
        self.seal_and_send(stamp.as_deref()).await
    }

    /// A hash of what this pack is made of as the file system describes it
    /// (see [`crate::outbox`]); `None` if an attachment cannot be looked at.
    fn stamp(&self) -> Option<String> {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        // Each field with its length, so no two inputs run together.
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"baton-stamp-v1");
        field(self.to.as_str().as_bytes());
        field(self.kind.as_str().as_bytes());
        field(
            self.supersedes
                .map(|old| old.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        field(&serde_json::to_vec(&self.item.record).ok()?);
        field(self.item.ctf_pupil_xml.as_deref().unwrap_or("").as_bytes());
        for (path, meta) in &self.item.attachments {
            let m = std::fs::metadata(path).ok()?;
            field(path.as_os_str().as_encoded_bytes());
            field(meta.name.as_bytes());
            field(meta.media_type.as_bytes());
            field(&m.len().to_le_bytes());
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt as _;
                for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
                    field(&n.to_le_bytes());
                }
                field(&m.ino().to_le_bytes());
                field(&m.dev().to_le_bytes());
            }
            #[cfg(not(unix))]
            {
                let modified = m.modified().ok()?;
                let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
                field(&since.as_nanos().to_le_bytes());
            }
        }
        Some(hex::encode(h.finalize()))
    }

    /// Seals the pack, then decides as [`Job::run`] says; records `stamp`
    /// once the pack is known to be sent.
    async fn seal_and_send(self, stamp: Option<&str>) -> Result<Outcome, Failure> {
        let outbox = Arc::clone(&self.outbox);
        let (key, outcome) = self.seal_and_decide().await?;
        if let (Some(stamp), Ok(Outcome::Sent(_) | Outcome::AlreadySent)) = (stamp, &outcome) {
            // Only a speed-up: a stamp not written costs a seal next time.
            let _ = outbox.stamp(stamp, &key);
        }
        outcome
    }

    async fn seal_and_decide(self) -> Result<(String, Result<Outcome, Failure>), Failure> {
        if let Some(decided) = self.before_sealing().await {
            return Ok(decided);
        }
        let sealed = self.seal(self.manifest()).await.map_err(Failure::retry)?;
        let key = self.key_of(&sealed.manifest);
        let replaces = match self.decide(&key).map_err(Failure::retry)? {
            Decision::Done(outcome) => return Ok((key, Ok(outcome))),
            Decision::Upload(e) => return Ok((key, upload(&self.outbox, self.exchange, *e).await)),
            Decision::Seal { stranded, replaces } => {
                if let Some(e) = stranded {
                    // The stranded pack keeps its own journal entry, so
                    // `sent` still names its pupil.
                    let mut old = *e;
                    old.key = format!("{}.{}", old.key, old.pack_id);
                    self.outbox.put(&old).map_err(Failure::retry)?;
                }
                replaces
            }
        };
        let entry = self
            .keep(key.clone(), sealed, replaces)
            .map_err(Failure::retry)?;
        Ok((key, upload(&self.outbox, self.exchange, entry).await))
    }

    /// What the pack with content key `key` comes to, from the outbox
    /// journal: sent before (already sent, or stranded), sealed and waiting
    /// (sent as it was sealed), a second pack for a pupil sent before
    /// (refused without `--again`), or one to keep and send.
    fn decide(&self, key: &str) -> Result<Decision> {
        let replaces = match self.outbox.get(key)? {
            Some(e) if e.state == State::Sent => {
                if !self.stranded.contains(&e.pack_id) {
                    return Ok(Decision::Done(Outcome::AlreadySent));
                }
                if !self.reseal {
                    return Ok(Decision::Done(Outcome::Stranded));
                }
                return Ok(Decision::Seal {
                    replaces: Some(e.pack_id.clone()),
                    stranded: Some(Box::new(e)),
                });
            }
            Some(e) if e.state == State::Sealed && self.outbox.sealed_path(key).exists() => {
                return Ok(Decision::Upload(Box::new(e)));
            }
            // A reseal that failed (or whose sealed file went) is still a
            // reseal: it keeps the pack it replaces.
            Some(e) => e.replaces,
            None => None,
        };
        if replaces.is_none()
            && !self.again
            && self.supersedes.is_none()
            && let Some(first) = self
                .earlier_for_pupil()
                .and_then(|all| all.iter().find(|e| e.key != key))
        {
            return Ok(Decision::Done(Outcome::Duplicate(Box::new(first.clone()))));
        }
        Ok(Decision::Seal {
            stranded: None,
            replaces,
        })
    }

    /// This home's earlier packs for the same pupil to the same school.
    fn earlier_for_pupil(&self) -> Option<&Vec<Entry>> {
        let upn = self.item.record.upn()?.to_string();
        self.earlier.get(&(self.to.to_string(), self.kind, upn))
    }

    /// The pack's manifest, its attachments' hashes not yet known.
    fn manifest(&self) -> Manifest {
        Manifest {
            record: self.item.record.clone(),
            ctf_pupil_xml: self.item.ctf_pupil_xml.clone(),
            attachments: self
                .item
                .attachments
                .iter()
                .map(|(_, m)| m.clone())
                .collect(),
        }
    }

    /// The attachments' paths, in the manifest's order.
    fn files(&self) -> Vec<PathBuf> {
        self.item
            .attachments
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The outbox's content key for a manifest whose hashes are known.
    fn key_of(&self, manifest: &Manifest) -> String {
        let key = Outbox::content_key(self.to.as_str(), self.kind, manifest);
        // A correction is its own pack even if its content is the same.
        match self.supersedes {
            Some(old) => format!("{key}-supersedes-{old}"),
            None => key,
        }
    }

    /// For a pupil this home has sent to the same school before, what the
    /// pack comes to, decided from its attachments' hashes (one read of each
    /// file) rather than by sealing it, since sealing writes and syncs a
    /// pack that may not be sent. `None`: seal it, and decide then (which
    /// also covers what this leaves, such as a file changed since listed).
    async fn before_sealing(&self) -> Option<(String, Result<Outcome, Failure>)> {
        // With `--again` or `--supersedes` the pack is most likely sent:
        // hashing first would read every file twice.
        if self.again || self.supersedes.is_some() {
            return None;
        }
        self.earlier_for_pupil()?;
        let mut manifest = self.manifest();
        let files = self.files();
        let read = tokio::task::spawn_blocking(move || {
            files
                .iter()
                .map(|path| AttachmentMeta::describe("", &mut std::fs::File::open(path)?))
                .collect::<std::io::Result<Vec<_>>>()
        });
        for (meta, read) in manifest.attachments.iter_mut().zip(read.await.ok()?.ok()?) {
            if read.size != meta.size {
                return None;
            }
            meta.sha256 = read.sha256;
        }
        let key = self.key_of(&manifest);
        let outcome = match self.decide(&key).ok()? {
            Decision::Done(outcome) => Ok(outcome),
            Decision::Upload(e) => upload(&self.outbox, self.exchange.clone(), *e).await,
            Decision::Seal { .. } => return None,
        };
        Some((key, outcome))
    }

    async fn seal(&self, mut manifest: Manifest) -> Result<Sealed> {
        let draft = Draft {
            pack_id: PackId::new(),
            from: self.from,
            to: self.to,
            kind: self.kind,
            created_at_ms: now_ms(),
            // The row's own date first, then `--left`, then today.
            left_on: self.item.left.or(self.left_on),
            supersedes: self.supersedes,
        };
        let files = self.files();
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
    fn keep(&self, key: String, sealed: Sealed, replaces: Option<String>) -> Result<Entry> {
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
            error: None,
            replaces,
            acknowledged_at_ms: None,
        };
        entry.set_header(&sealed.header);
        self.outbox.put(&entry)?;
        Ok(entry)
    }
}

/// Uploads a sealed outbox entry and marks it sent.
pub(crate) async fn upload(
    outbox: &Outbox,
    mut exchange: v1::exchange_client::ExchangeClient<Authed>,
    mut entry: Entry,
) -> Result<Outcome, Failure> {
    let header = v1::PackHeader::from(&entry.signed_header().map_err(Failure::retry)?);
    let path = outbox.sealed_path(&entry.key);
    let mut file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))
        .map_err(Failure::retry)?;
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
                part: Some(v1::upload_request::Part::Chunk(buf.into())),
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
        .context("reading the sealed pack was interrupted")
        .map_err(Failure::retry)?
        .context("reading the sealed pack")
        .map_err(Failure::retry)?;
    match result {
        Ok(response) => {
            entry.state = State::Sent;
            entry.sent_at_ms = Some(now_ms());
            outbox.put(&entry).map_err(Failure::retry)?;
            // The pack is sent: a sealed file left behind (it could not be
            // removed) is never read again for a sent entry.
            let _ = std::fs::remove_file(&path);
            Ok(Outcome::Sent(response.into_inner().checkpoint))
        }
        Err(status) => {
            let (message, retry) = refusal(&status);
            if !retry || status.code() == tonic::Code::FailedPrecondition {
                // The sealed bytes can never be accepted: drop them. The
                // entry stays (as failed) so `baton sent` shows it.
                let _ = std::fs::remove_file(&path);
                entry.state = State::Failed;
                entry.error = Some(message.clone());
                outbox.put(&entry).map_err(Failure::retry)?;
            }
            Err(Failure { message, retry })
        }
    }
}

/// What an upload refusal means for the person sending, and whether a rerun
/// can help.
fn refusal(status: &tonic::Status) -> (String, bool) {
    use tonic::Code;
    match status.code() {
        Code::FailedPrecondition if status.message().contains("not yet approved") => (
            format!(
                "this device's key is not approved yet ({}): read its key id (`baton keys show`) to the trust's operator, then run the same command again",
                status.message()
            ),
            true,
        ),
        Code::FailedPrecondition => (
            format!(
                "the destination's keys changed since this pack was sealed ({}); run the same command again to re-seal it to the current keys",
                status.message()
            ),
            true,
        ),
        Code::ResourceExhausted if status.message().contains("quota") => (
            format!(
                "the server holds as much from your school as it allows ({}); run the same command again once the receiving schools have collected and acknowledged earlier packs",
                status.message()
            ),
            false,
        ),
        Code::ResourceExhausted if status.message().contains("open, the most") => (
            format!(
                "the server is busy with this school's other transfers ({}); run the same command again shortly",
                status.message()
            ),
            true,
        ),
        Code::ResourceExhausted => (
            format!(
                "the server refused the pack as too large ({}): send fewer or smaller attachments",
                status.message()
            ),
            false,
        ),
        Code::InvalidArgument | Code::PermissionDenied | Code::AlreadyExists => (
            format!("the server refused the pack: {}", explain(status)),
            false,
        ),
        _ => (format!("upload failed: {}", explain(status)), true),
    }
}
