//! The outbox journal: one entry per pack this home sealed, keyed by the
//! pack's content (destination, kind, record, attachments), so re-running a
//! send after a crash or a network failure re-uploads the same sealed bytes
//! under the same pack id, and never sends the same content twice. The
//! journal is also the only place that knows which pupil a sent pack is for
//! (the server never did), until the pack's verified receipt is older than
//! `keep_pupil_names_days` (config.json, default 30): then it forgets.
//!
//! Beside it, source stamps let a re-run skip sealing what it sent before:
//! a stamp is a hash of what a pupil's pack is made of as the file system
//! describes it (the record, the CTF `<Pupil>` element, and each
//! attachment's path, size, modification and change times and inode), and
//! `STAMP.stamp` names the content key its pack was sealed under. Change
//! any file (even keeping its size and modification time, since the change
//! time moves) and the stamp differs, so the pack is sealed and looked up
//! by content as before.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use baton::api::v1;
use baton::pack::{Kind, Manifest, SignedHeader};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::home::{Home, read_json, write_json};

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Sealed into the outbox; not yet confirmed by the server.
    Sealed,
    /// The server confirmed it holds the pack.
    Sent,
    /// The server refused it for a reason a retry cannot fix (no key to
    /// seal to, too large); kept so `baton sent` shows it as not sent. A
    /// later send of the same content tries again.
    Failed,
}

/// One sealed pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Content key (hex SHA-256).
    pub key: String,
    /// The pack id.
    pub pack_id: String,
    /// Destination LAESTAB.
    pub to: String,
    /// Kind.
    pub kind: Kind,
    /// The pupil's UPN (local only).
    pub upn: String,
    /// The pupil's name (local only).
    pub name: String,
    /// Where the pack came from (folder or file).
    pub source: String,
    /// The signed header, protobuf bytes in hex.
    pub header: String,
    /// State.
    pub state: State,
    /// When the server confirmed it, ms since the epoch.
    pub sent_at_ms: Option<i64>,
    /// Why the server refused it, for a failed entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pack this one was sent again for (`send --reseal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// When the pack was settled, ms since the epoch (seen by `baton sent`):
    /// the time its verified receipt states, or when the server deleted its
    /// ciphertext (recalled, superseded or purged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at_ms: Option<i64>,
}

/// The journal folder.
pub struct Outbox {
    dir: PathBuf,
}

impl Entry {
    /// The signed header.
    pub fn signed_header(&self) -> Result<SignedHeader> {
        let bytes = hex::decode(&self.header).context("outbox journal: header is not hex")?;
        let wire = v1::PackHeader::decode(bytes.as_slice())
            .context("outbox journal: header does not decode")?;
        SignedHeader::try_from(&wire).context("outbox journal: header is malformed")
    }

    /// True when none of the keys this pack was sealed to is among
    /// `active`: nobody at the destination can open it any more.
    pub fn stranded(&self, active: &[baton::keys::KeyId]) -> bool {
        self.signed_header().is_ok_and(|h| {
            !h.header()
                .recipient_key_ids
                .iter()
                .any(|id| active.contains(id))
        })
    }

    /// Records when the pack was settled (its verified receipt, or its
    /// ciphertext deleted by a recall, a correction or retention) and, once
    /// that is more than `keep_ms` old, forgets who the pupil was (name,
    /// UPN, source): the school holds the pupil's records elsewhere, and the
    /// journal only needs the pack. Returns whether the entry changed.
    pub fn settled(&mut self, at_ms: i64, now_ms: i64, keep_ms: i64) -> bool {
        let mut changed = false;
        if self.acknowledged_at_ms.is_none() {
            self.acknowledged_at_ms = Some(at_ms);
            changed = true;
        }
        let old = self
            .acknowledged_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) > keep_ms);
        if old && !(self.upn.is_empty() && self.name.is_empty() && self.source.is_empty()) {
            self.upn.clear();
            self.name.clear();
            self.source.clear();
            changed = true;
        }
        changed
    }

    /// Stores a header.
    pub fn set_header(&mut self, header: &SignedHeader) {
        self.header = hex::encode(v1::PackHeader::from(header).encode_to_vec());
    }
}

impl Outbox {
    /// The home's outbox.
    pub fn open(home: &Home) -> Result<Self> {
        let dir = home.path("outbox");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Takes this home's send lock, held until the returned file is
    /// dropped: two sends at once could each seal the same content under
    /// its own pack id and both upload it. The lock is the operating
    /// system's, so it goes with the process however it ends.
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join(".send-lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another `baton send` is running in this home ({}); wait for it to finish, then run this one again",
                self.dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The content key of a pack: the same folder sent to the same school
    /// as the same kind always has the same key.
    pub fn content_key(to: &str, kind: Kind, manifest: &Manifest) -> String {
        let mut h = Sha256::new();
        h.update(b"baton-outbox-v1\n");
        h.update(to.as_bytes());
        h.update(kind.as_str().as_bytes());
        h.update(v1::Manifest::from(manifest.clone()).encode_to_vec());
        hex::encode(h.finalize())
    }

    /// The entry for a key, if any.
    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        let path = self.dir.join(format!("{key}.json"));
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Saves an entry (atomically).
    pub fn put(&self, entry: &Entry) -> Result<()> {
        write_json(&self.dir.join(format!("{}.json", entry.key)), entry)
    }

    /// Where the sealed ciphertext of an entry lives until it is sent.
    pub fn sealed_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.age"))
    }

    /// The content key a source stamp was sealed under, if it was.
    pub fn stamped(&self, stamp: &str) -> Option<String> {
        let key = std::fs::read_to_string(self.dir.join(format!("{stamp}.stamp"))).ok()?;
        let key = key.trim();
        (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_string())
    }

    /// Records that the pack of `stamp` has content key `key`.
    pub fn stamp(&self, stamp: &str, key: &str) -> Result<()> {
        let path = self.dir.join(format!("{stamp}.stamp"));
        let tmp = self.dir.join(format!("{stamp}.stamp.tmp"));
        std::fs::write(&tmp, key)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The outbox folder.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
        {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "json") {
                out.push(read_json(&path)?);
            }
        }
        Ok(out)
    }
}
