//! `batond admin audit …`: checking the hash chain, and holding it to the
//! signed checkpoints the daemon handed out (a school's, or one exported
//! earlier), so that truncating or rewriting the log is caught even by
//! whoever can recompute the chain.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};
use baton::checkpoint::Checkpoint;
use tokio_stream::StreamExt as _;

use crate::audit;
use crate::notary::Notary;
use crate::store::Store;

/// Reads checkpoints from `path`: one JSON object, a JSON array, or JSON lines.
fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading checkpoints from {}", path.display()))?;
    let trimmed = text.trim_start();
    let parsed: Result<Vec<Checkpoint>, _> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)
    } else {
        trimmed
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect()
    };
    let checkpoints = match parsed {
        Ok(c) => c,
        // One pretty-printed object over several lines.
        Err(_) => vec![serde_json::from_str(trimmed).with_context(|| {
            format!(
                "{}: not a checkpoint, an array or JSON lines of them",
                path.display()
            )
        })?],
    };
    if checkpoints.is_empty() {
        bail!("{}: no checkpoint in it", path.display());
    }
    Ok(checkpoints)
}

/// Verifies the chain, and with `checkpoints` that the log still holds
/// every entry each of them fixed, with the same hash.
pub async fn verify<S: Store>(
    store: &S,
    data_dir: &Path,
    checkpoints: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut wanted: BTreeMap<u64, (Checkpoint, String)> = BTreeMap::new();
    if let Some(path) = checkpoints {
        // Only checkpoints need the daemon's audit key, to tell its own.
        let notary = Notary::load_or_create(data_dir)?;
        for (n, c) in read_checkpoints(path)?.into_iter().enumerate() {
            let name = format!("checkpoint {} of {}", n + 1, path.display());
            if !c.verifies() {
                bail!("{name}: the signature does not verify (altered, or not a checkpoint)");
            }
            if c.signing_key != notary.public() {
                bail!(
                    "{name}: signed by audit key {}, not this daemon's ({}): was {} replaced?",
                    hex::encode(c.signing_key),
                    hex::encode(notary.public()),
                    crate::notary::FILE
                );
            }
            if let Some((other, other_name)) = wanted.get(&c.entries)
                && other.head_sha256 != c.head_sha256
            {
                bail!(
                    "{name} and {other_name} both fix entry {} with different hashes: the log was rewritten between them",
                    c.entries
                );
            }
            wanted.insert(c.entries, (c, name));
        }
    }
    let mut log = store.audit_log();
    let mut verifier = audit::Verifier::default();
    let mut matched = 0;
    while let Some(entry) = log.next().await {
        let entry = entry.context("reading the audit log")?;
        verifier.push(&entry)?;
        if let Some((c, name)) = wanted.get(&verifier.count()) {
            if entry.hash != c.head_sha256 {
                bail!(
                    "audit entry {}: its hash differs from the one {name} fixed (signed {}): the log was rewritten",
                    entry.seq,
                    crate::audit::time(c.at_ms)
                );
            }
            matched += 1;
        }
    }
    if let Some((entries, (c, name))) = wanted.iter().next_back()
        && *entries > verifier.count()
    {
        bail!(
            "the audit log has {} entries, but {name} (signed {}) fixed {entries}: the log was truncated",
            verifier.count(),
            crate::audit::time(c.at_ms)
        );
    }
    writeln!(out, "audit log intact: {} entries", verifier.count())?;
    if matched > 0 {
        writeln!(out, "matches {matched} signed checkpoint(s)")?;
    }
    Ok(())
}

/// Verifies the whole chain of `store`'s audit log; its number of entries.
pub async fn chain<S: Store>(store: &S) -> anyhow::Result<u64> {
    let mut log = store.audit_log();
    let mut verifier = audit::Verifier::default();
    while let Some(entry) = log.next().await {
        verifier.push(&entry.context("reading the audit log")?)?;
    }
    Ok(verifier.count())
}

/// Prints every entry as a JSON line; with `checkpoint`, writes there the
/// signed checkpoint of the last entry exported.
pub async fn export<S: Store>(
    store: &S,
    notary: &Notary,
    checkpoint: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut log = store.audit_log();
    let mut last = None;
    while let Some(entry) = log.next().await {
        let entry = entry.context("reading the audit log")?;
        writeln!(out, "{}", serde_json::to_string(&entry)?)?;
        last = Some((entry.seq, entry.hash));
    }
    if let Some(path) = checkpoint {
        let Some((seq, hash)) = last else {
            bail!("the audit log is empty: there is no checkpoint to write");
        };
        let head: [u8; 32] = hash
            .try_into()
            .map_err(|_| anyhow::anyhow!("audit entry {seq}: hash is not 32 bytes"))?;
        let entries = u64::try_from(seq).context("audit sequence number")?;
        let signed = notary.sign(entries, head);
        std::fs::write(path, serde_json::to_string_pretty(&signed)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Prints a signed checkpoint of the log's head as it is now.
pub async fn checkpoint<S: Store>(
    store: &S,
    notary: &Notary,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(signed) = notary.checkpoint(store).await? else {
        bail!("the audit log is empty: there is no checkpoint to sign");
    };
    writeln!(out, "{}", serde_json::to_string_pretty(&signed)?)?;
    Ok(())
}
