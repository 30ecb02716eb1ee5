//! `batond admin backup DIR`: a copy of the trust's server that restores,
//! taken while the daemon serves and schools send. On SQLite: a consistent
//! copy of the database (`VACUUM INTO`) and its ciphertext files (packs of
//! 256 KiB or more, under `baton.db-ciphertext/`), the generated TLS files (schools
//! pin the CA), the audit key (schools hold checkpoints it signed) and the
//! configuration file; then the copy's audit chain is verified. `batond
//! serve --data-dir DIR` serves the same trust from it. On PostgreSQL the
//! database is `pg_dump`'s (docs/operations.md), the rest is the same.
//!
//! `batond admin check` then proves a restore (or any database) holds
//! together: the audit chain verifies, and every pack whose ciphertext is
//! still held is whole (its chunks hash to the SHA-256 its sender signed).

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};

use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::store::Store;
use crate::store::sqlite::Sqlite;

/// Copies `from` (a file or folder) to `to`, keeping owner-only modes.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<u64> {
    if from.is_dir() {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        let mut n = 0;
        for entry in
            std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            n += copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(n)
    } else {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(1)
    }
}

/// Runs `batond admin backup DIR`.
pub async fn run<S: Store>(
    store: &S,
    config: &Config,
    dir: &Path,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty: back up into a new folder", dir.display());
    }
    crate::create_private_dir(dir)?;
    let database = dir.join("baton.db");
    let sqlite = store
        .backup_into(&database)
        .await
        .context("copying the database")?;
    let mut files = u64::from(sqlite);
    // SQLite's ciphertext files for packs of 256 KiB or more, beside it.
    if let Ok(entries) = std::fs::read_dir(crate::store::PackFiles::folder_for(&database)) {
        files += entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .count() as u64;
    }
    // The TLS files schools pin, and the federation identity peers pin.
    for folder in ["tls", crate::federation::FOLDER] {
        let from = config.data_dir.join(folder);
        if from.is_dir() {
            files += copy_tree(&from, &dir.join(folder))?;
        }
    }
    let audit_key = config.data_dir.join("audit-signing.key");
    if audit_key.exists() {
        files += copy_tree(&audit_key, &dir.join("audit-signing.key"))?;
    }
    if let Some(file) = &config.config_file {
        files += copy_tree(file, &dir.join("batond.toml"))?;
    }
    if !sqlite {
        writeln!(
            out,
            "copied {files} files (TLS, federation identity, audit key, config) into {dir}. The database is PostgreSQL: add it with \
             `pg_dump -Fc -f {dir}/baton.dump \"$BATON_DATABASE_URL\"`; after restoring it (`pg_restore -d NEWDB {dir}/baton.dump`), \
             run `batond admin check` against it.",
            dir = dir.display()
        )?;
        return Ok(());
    }
    // The copy must hold together on its own.
    let copy = Sqlite::open(&database)
        .await
        .with_context(|| format!("opening the copy {}", database.display()))?;
    let entries = crate::admin::audit::chain(&copy).await?;
    writeln!(
        out,
        "backed up into {} ({files} files; audit log intact: {entries} entries). Restore: `batond serve --data-dir {}`",
        dir.display(),
        dir.display()
    )?;
    Ok(())
}

/// Runs `batond admin check`: the audit chain, then every held pack's
/// ciphertext against its SHA-256. Fails naming the packs that are not whole.
pub async fn check<S: Store>(store: &S, out: &mut impl Write) -> anyhow::Result<()> {
    let entries = crate::admin::audit::chain(store).await?;
    let packs = store
        .stored_between(0, i64::MAX)
        .await
        .context("reading packs")?;
    let (mut whole, mut deleted) = (0u64, 0u64);
    let mut broken = Vec::new();
    for p in &packs {
        if p.deleted_at_ms.is_some() {
            deleted += 1;
            continue;
        }
        let mut hash = Sha256::new();
        let mut read = true;
        for idx in 0..p.chunks {
            match store.chunk(&p.upload_id, idx).await {
                Ok(chunk) => hash.update(&chunk),
                Err(_) => {
                    read = false;
                    break;
                }
            }
        }
        if read && hash.finalize().as_slice() == p.ciphertext_sha256 {
            whole += 1;
        } else {
            broken.push(format!("{} -> {} (seq {})", p.from, p.to, p.seq));
        }
    }
    writeln!(
        out,
        "audit log intact: {entries} entries; {whole} packs held and whole; {deleted} recalled, forwarded or purged (no ciphertext by design)"
    )?;
    if !broken.is_empty() {
        bail!(
            "{} packs' ciphertext is missing or altered: {}",
            broken.len(),
            broken.join(", ")
        );
    }
    Ok(())
}
