//! What a pull keeps: `pulled.json` in the home (each pulled pack, its
//! folder, the CTF it went into, its acknowledgement: what `baton ack` and
//! later pulls read) and `pack.json` in each pulled folder.

use std::collections::BTreeMap;

use anyhow::Result;
use baton::pack::Kind;
use serde::{Deserialize, Serialize};

use crate::home::{Home, read_json, write_json};

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
    /// The pupil's UPN, for one CTF entry per pupil (empty in older files).
    #[serde(default)]
    pub upn: String,
    /// When the sender sealed it (0 in older files).
    #[serde(default)]
    pub created_at_ms: i64,
    /// The CTF file (`--ctf-dir`) this pack's pupil went into, once it did;
    /// a later `pull --ctf-dir` does not write it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctf: Option<String>,
    /// The pack this one corrects, as its signed header says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The destination the sender addressed (this school's number, or a
    /// former one); empty in older files.
    #[serde(default)]
    pub to: String,
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
    /// The pack this one corrects and replaces, as its signed header says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// Who forwarded it (the trust's escrow, `XXXXXXX`, or another trust's,
    /// `XXXXXXX@PEER`), when `from` is the original sender of a pack held
    /// in escrow; `signing_key_id` is then
    /// the original sender's key, and both signatures were checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The id of the original pack the escrow forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
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
