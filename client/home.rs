//! The client's home: one folder per school (or key holder) holding the
//! config, the CA to trust, the API token, the identity file, the pinned
//! directory, the outbox journal and the record of pulled packs. Secret
//! files are written with mode 0600, every file atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::crypto::Identity;
use serde::{Deserialize, Serialize};

/// The school and server this home belongs to (`config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The daemon's URL, `https://host:port`.
    pub server: String,
    /// This home's school.
    pub school: Laestab,
    /// The key id of this home's identity.
    pub key_id: String,
    /// Days the outbox keeps a sent pupil's name and UPN after the pack's
    /// verified receipt (then only the pack is kept).
    #[serde(default = "default_keep_pupil_names_days")]
    pub keep_pupil_names_days: u32,
    /// Plaintext `http://` to a development daemon on this machine
    /// (`baton init --insecure-loopback`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_loopback: bool,
}

fn default_keep_pupil_names_days() -> u32 {
    30
}

/// Reads an identity file, decrypting it with `BATON_PASSPHRASE` when it is
/// passphrase-protected.
fn read_identity(path: &Path) -> Result<Identity> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading identity file {}", path.display()))?;
    let passphrase = std::env::var("BATON_PASSPHRASE")
        .ok()
        .map(age::secrecy::SecretString::from);
    Identity::from_file_bytes(&bytes, passphrase.as_ref())
        .with_context(|| format!("reading identity file {}", path.display()))
}

/// A client home folder.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `dir`, or the platform config dir when `None`.
    pub fn locate(dir: Option<PathBuf>) -> Result<Self> {
        let root = match dir {
            Some(d) => d,
            None => directories::ProjectDirs::from("uk", "Baton", "baton")
                .map(|p| p.config_dir().to_path_buf())
                .context("no home folder: pass --home DIR or set BATON_HOME")?,
        };
        Ok(Self { root })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// True once `baton init` has completed here.
    pub fn is_initialised(&self) -> bool {
        self.path("config.json").exists()
    }

    /// Reads `config.json`.
    pub fn config(&self) -> Result<Config> {
        if !self.is_initialised() {
            bail!(
                "{} is not a Baton home yet: run `baton init` first (or pass --home DIR / set BATON_HOME)",
                self.root.display()
            );
        }
        read_json(&self.path("config.json"))
    }

    /// Loads this home's identity.
    pub fn identity(&self) -> Result<Identity> {
        read_identity(&self.path("identity.txt"))
    }

    /// This home's identity first, then those `baton init --reenrol`
    /// retired (`identity-<KEYID>.retired.txt`): packs sealed to an old key
    /// before it was replaced still open here.
    pub fn identities(&self) -> Result<Vec<Identity>> {
        let mut out = vec![self.identity()?];
        let mut retired: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("identity-") && n.ends_with(".retired.txt"))
            })
            .collect();
        retired.sort();
        for path in retired {
            out.push(read_identity(&path)?);
        }
        Ok(out)
    }

    /// Where `baton init --reenrol` keeps a replaced identity.
    pub fn retired_identity_path(&self, identity: &Identity) -> PathBuf {
        self.path(&format!("identity-{}.retired.txt", identity.key_id()))
    }

    /// Reads the API token.
    pub fn token(&self) -> Result<String> {
        let path = self.path("token");
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        Ok(token.trim().to_string())
    }

    /// Reads the CA certificate to trust.
    pub fn ca(&self) -> Result<Vec<u8>> {
        let path = self.path("ca.pem");
        std::fs::read(&path).with_context(|| format!("reading CA certificate {}", path.display()))
    }
}

/// Reads a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Writes JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes(), false)
}

/// Writes a file atomically (temp file, fsync, rename); `secret` makes it 0600.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let dir = path.parent().context("a file path has a parent folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    if secret {
        set_private(tmp.path())?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Creates `dir` and any missing parents readable by their owner only
/// (0700): pulled pupil folders, child-protection files and CTFs.
pub fn create_private_dir_all(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Creates (or truncates) `path` readable by its owner only (0600).
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a file readable by its owner only.
pub fn set_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    }
    Ok(())
}
