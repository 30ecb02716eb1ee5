//! The daemon's audit key, which signs checkpoints of the audit log's head
//! (see `baton::checkpoint`). It lives in `DATA_DIR/audit-signing.key`
//! (owner-only), made on first use; every node of one trust needs the same
//! file, so that their checkpoints are one daemon's.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use baton::checkpoint::Checkpoint;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::store::{AuditLog, now_ms};

/// The file name under the data directory.
pub const FILE: &str = "audit-signing.key";

/// Signs checkpoints.
pub struct Notary {
    key: SigningKey,
    /// The last checkpoint of the live log signed, reused while the head
    /// has not moved: uploads committed in one group read the same head.
    last: std::sync::Mutex<Option<Checkpoint>>,
}

impl Notary {
    /// Loads the key from `data_dir`, making it if it does not exist.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&Zeroizing::new(text), &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .with_context(|| format!("{}: not 64 hex digits", path.display()))?,
        );
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes);
        Ok(Self::with_key(SigningKey::from_bytes(&seed)))
    }

    fn with_key(key: SigningKey) -> Self {
        Self {
            key,
            last: std::sync::Mutex::new(None),
        }
    }

    fn create(path: &Path) -> anyhow::Result<Self> {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                let text = Zeroizing::new(hex::encode(*seed));
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(Self::with_key(SigningKey::from_bytes(&seed)))
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                );
                Self::parse(&text, path)
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    /// The public half, as checkpoints name it.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs the head of a log of `entries` entries ending in `head`.
    pub fn sign(&self, entries: u64, head: [u8; 32]) -> Checkpoint {
        Checkpoint::sign(&self.key, entries, head, now_ms())
    }

    /// Signs `statement`, which must begin with a context string of its
    /// own (a relay receipt's, say) so it can pass for no other statement.
    pub fn sign_statement(&self, statement: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(statement).to_bytes()
    }

    /// This daemon's peer descriptor, signed with this key (see
    /// `federation::descriptor`).
    pub fn describe(
        &self,
        name: &str,
        url: &str,
        tls_cert_pem: &str,
        issued_at_ms: i64,
        valid_until_ms: i64,
    ) -> anyhow::Result<crate::federation::descriptor::Descriptor> {
        crate::federation::descriptor::Descriptor::sign(
            &self.key,
            name,
            url,
            tls_cert_pem,
            issued_at_ms,
            valid_until_ms,
        )
    }

    /// A checkpoint of the head `entries`, `head`: the one last signed if
    /// it names the same head (a true statement still, signed a moment
    /// earlier), else a new one.
    pub fn sign_head(&self, entries: u64, head: [u8; 32]) -> Checkpoint {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some(c) if c.entries == entries && c.head_sha256 == head => c.clone(),
            _ => {
                let signed = self.sign(entries, head);
                *last = Some(signed.clone());
                signed
            }
        }
    }

    /// A checkpoint of the log's head as it is now (`None` if empty).
    pub async fn checkpoint<S: AuditLog>(&self, store: &S) -> anyhow::Result<Option<Checkpoint>> {
        let head = store
            .audit_head()
            .await
            .context("reading the audit log's head")?;
        Ok(head.map(|(entries, hash)| self.sign_head(entries, hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_signed_once_a_head() {
        let notary = Notary::with_key(SigningKey::from_bytes(&[3; 32]));
        let first = notary.sign_head(5, [1; 32]);
        assert!(first.verifies());
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(notary.sign_head(5, [1; 32]), first, "the same head: reused");
        let moved = notary.sign_head(6, [2; 32]);
        assert!(moved.verifies());
        assert_eq!((moved.entries, moved.head_sha256), (6, [2; 32]));
        assert_ne!(moved.signature, first.signature);
    }
}
