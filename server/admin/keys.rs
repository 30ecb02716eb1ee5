//! `batond admin key …` and `batond new-directory-key`: the operator's side
//! of the trust's directory key. The secret key lives in a file the
//! operator keeps off the server (a USB stick, the operator's laptop) and
//! passes only to `key approve` and `key revoke`; the daemon and clients get
//! only its public half.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, bail};
use baton::Laestab;
use baton::keys::{KeyId, SchoolKey};
use baton::trust::{DirectoryKey, DirectorySigner, Revocation, RevokedBy};

use crate::audit::Event;
use crate::config::Config;
use crate::store::{Store, now_ms};

/// Creates a new directory key: the secret in `out` (owner-only, never
/// overwritten), the public half printed for the config and the schools.
pub fn new_directory_key(out_file: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let signer = DirectorySigner::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(out_file).with_context(|| {
        format!(
            "creating {} (an existing key file is never overwritten)",
            out_file.display()
        )
    })?;
    file.write_all(signer.to_secret_text().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out_file.display()))?;
    let public = signer.public();
    writeln!(out, "{public}")?;
    writeln!(
        out,
        "directory key fingerprint {}; secret key in {} (keep it off the server).",
        public.fingerprint(),
        out_file.display()
    )?;
    writeln!(
        out,
        "Put `directory_key = \"{public}\"` in batond.toml, and give the key to each school with the CA certificate (`baton init --directory-key {public}`)."
    )?;
    Ok(())
}

/// Reads the secret directory key, checking it is the one the daemon is
/// configured with (when it is).
fn read_signer(path: &Path, config: &Config) -> anyhow::Result<DirectorySigner> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the directory key {}", path.display()))?,
    );
    let signer = DirectorySigner::from_secret_text(&text)
        .with_context(|| format!("reading the directory key {}", path.display()))?;
    let Some(configured) = config.directory_key else {
        eprintln!(
            "warning: no directory_key is configured here, so this cannot check that {} is the trust's directory key (its fingerprint is {}); set directory_key in batond.toml",
            path.display(),
            signer.public().fingerprint()
        );
        return Ok(signer);
    };
    if configured != signer.public() {
        bail!(
            "{} is not the directory key this daemon is configured with ({}, fingerprint {})",
            path.display(),
            configured,
            configured.fingerprint()
        );
    }
    Ok(signer)
}

/// One key of one school, by id.
async fn find_key<S: Store>(
    store: &S,
    laestab: &Laestab,
    key_id: KeyId,
) -> anyhow::Result<SchoolKey> {
    let school = store
        .school(laestab)
        .await
        .context("reading the directory")?
        .with_context(|| format!("school {laestab} is not enrolled"))?;
    school
        .keys
        .into_iter()
        .find(|k| k.key_id() == key_id)
        .with_context(|| {
            format!(
                "school {laestab} has no key {}: `batond admin key pending` lists keys awaiting approval",
                key_id.grouped()
            )
        })
}

/// Endorses one key with the directory key, after the operator has read its
/// fingerprint back to the school.
pub async fn approve<S: Store>(
    store: &S,
    config: &Config,
    laestab: &Laestab,
    key_id: KeyId,
    secret: &Path,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let signer = read_signer(secret, config)?;
    let key = find_key(store, laestab, key_id).await?;
    if !key.is_active() {
        bail!(
            "key {} of {laestab} is revoked: there is nothing to approve",
            key_id.grouped()
        );
    }
    let endorsement = signer.endorse(laestab, &key);
    store
        .endorse_key(
            laestab,
            key_id,
            endorsement,
            now_ms(),
            Event::by_admin("key.approve", format!("{laestab} {key_id}")),
        )
        .await
        .with_context(|| format!("approving key {key_id} of {laestab}"))?;
    writeln!(
        out,
        "approved key {} of {laestab} ({}; roles {})",
        key_id.grouped(),
        key.label,
        baton::keys::role_names(&key.roles, ", ")
    )?;
    Ok(())
}

/// Revokes a key, signed with the directory key when one is given (other
/// schools then follow it without confirming).
pub async fn revoke<S: Store>(
    store: &S,
    config: &Config,
    laestab: &Laestab,
    key_id: KeyId,
    secret: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let now = now_ms();
    let revocation = secret
        .map(|path| {
            read_signer(path, config).map(|signer| Revocation {
                by: RevokedBy::Directory,
                signature: signer.revoke(laestab, key_id, now),
            })
        })
        .transpose()?;
    let signed = if revocation.is_some() { " signed" } else { "" };
    store
        .revoke_key(
            laestab,
            key_id,
            now,
            revocation,
            Event::by_admin("key.revoke", format!("{key_id}{signed}")),
        )
        .await
        .with_context(|| format!("revoking key {key_id} of {laestab}"))?;
    writeln!(out, "revoked key {key_id} of {laestab}")?;
    if revocation.is_none() {
        writeln!(
            out,
            "unsigned: schools that pinned this key confirm the change (`baton schools trust {laestab}`); pass --directory-key to sign it"
        )?;
    }
    Ok(())
}

/// Active keys the configured directory key has not endorsed.
pub async fn pending<S: Store>(
    store: &S,
    config: &Config,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let schools = store
        .list_schools()
        .await
        .context("reading the directory")?;
    let endorsed =
        |laestab: &Laestab, k: &SchoolKey, d: Option<DirectoryKey>| match (d, k.endorsement) {
            (Some(d), Some(e)) => d.endorses(laestab, k, &e),
            (None, e) => e.is_some(),
            (Some(_), None) => false,
        };
    let mut rows = Vec::new();
    for s in &schools {
        for k in s.keys.iter().filter(|k| k.is_active()) {
            if !endorsed(&s.info.laestab, k, config.directory_key) {
                rows.push((s, k));
            }
        }
    }
    if json {
        let items: Vec<_> = rows
            .iter()
            .map(|(s, k)| {
                serde_json::json!({"laestab": s.info.laestab.to_string(), "school": s.info.name,
                    "key_id": k.key_id().to_string(), "label": k.label, "roles": k.roles})
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(items))?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no key is awaiting approval")?;
    }
    for (s, k) in rows {
        writeln!(
            out,
            "{}  {:<30}  {}  {:<8}  {}",
            s.info.laestab,
            s.info.name,
            k.key_id().grouped(),
            baton::keys::role_names(&k.roles, ","),
            k.label
        )?;
    }
    Ok(())
}
