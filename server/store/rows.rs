//! Pure helpers both stores share: decoding rows into domain values and the
//! next link of the audit chain. Nothing here touches a connection.

use baton::Laestab;
use baton::keys::{PublicKey, Role, SchoolKey};

use super::{Arrival, PackStatus, Result, StoreError, StoredPack};
use crate::audit;

/// A pack row as both databases return it (`pack_columns!`).
#[derive(Debug, sqlx::FromRow)]
pub struct PackRow {
    seq: i64,
    header: Vec<u8>,
    from_laestab: String,
    to_laestab: String,
    ciphertext_sha256: Vec<u8>,
    upload_id: String,
    chunks: i64,
    status: String,
    uploaded_at_ms: i64,
    downloaded_at_ms: Option<i64>,
    acknowledged_at_ms: Option<i64>,
    receipt: Option<Vec<u8>>,
    supersedes: Option<String>,
    superseded_by: Option<String>,
    recall: Option<Vec<u8>>,
    recalled_at_ms: Option<i64>,
    deleted_at_ms: Option<i64>,
    purged_at_ms: Option<i64>,
    purge_reason: Option<String>,
    forwards: Option<String>,
    readdressed_as: Option<String>,
    relay_to: Option<String>,
    relayed_at_ms: Option<i64>,
    relayed_from: Option<String>,
}

/// A pack row with its pack id (`Packs::packs`).
#[derive(Debug, sqlx::FromRow)]
pub struct PackIdRow {
    /// The pack's id.
    pub pack_id: String,
    /// The pack's row.
    #[sqlx(flatten)]
    pub pack: PackRow,
}

/// A pack row with its one chunk, if it is a pack of one chunk held as a
/// row (`Packs::pack_for_download`).
#[derive(Debug, sqlx::FromRow)]
pub struct PackChunkRow {
    /// The pack's row.
    #[sqlx(flatten)]
    pub pack: PackRow,
    /// Its one chunk, when it has one held as a row.
    pub first_chunk: Option<Vec<u8>>,
    /// The directory version as of the same read.
    pub directory_version: i64,
}

/// [`PackChunkRow`] with the pack's id (`Packs::packs_for_download`).
#[derive(Debug, sqlx::FromRow)]
pub struct PackIdChunkRow {
    /// The pack's id.
    pub pack_id: String,
    /// The rest of the read.
    #[sqlx(flatten)]
    pub read: PackChunkRow,
}

/// A key row as both databases return it.
pub type KeyRow = (
    String,
    String,
    Vec<u8>,
    String,
    String,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
    Option<String>,
    Option<Vec<u8>>,
);

/// An audit row as both databases return it.
pub type AuditRow = (i64, i64, String, String, String, Vec<u8>, Vec<u8>);

/// A stored value that does not decode.
pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A stored LAESTAB.
pub fn laestab(text: &str) -> Result<Laestab> {
    Laestab::parse_address(text).map_err(|e| corrupt(format!("LAESTAB {text:?}: {e}")))
}

/// The id of the pack a header forwards, as stored in `packs.forwards`.
pub fn forwards(h: &baton::pack::Header) -> Option<String> {
    h.forwarded
        .as_ref()
        .map(|f| f.original.header().pack_id.to_string())
}

/// A stored pack id.
fn pack_id(text: Option<String>, what: &str) -> Result<Option<baton::pack::PackId>> {
    text.map(|t| t.parse().map_err(|_| corrupt(format!("{what} {t:?}"))))
        .transpose()
}

/// A pack row as a [`StoredPack`].
pub fn pack_from_row(row: PackRow) -> Result<StoredPack> {
    let status = PackStatus::from_text(&row.status)
        .ok_or_else(|| corrupt(format!("pack status {:?}", row.status)))?;
    Ok(StoredPack {
        seq: row.seq,
        header: row.header,
        from: laestab(&row.from_laestab)?,
        to: laestab(&row.to_laestab)?,
        ciphertext_sha256: row
            .ciphertext_sha256
            .try_into()
            .map_err(|_| corrupt("pack hash length"))?,
        upload_id: row.upload_id,
        chunks: row.chunks,
        status,
        uploaded_at_ms: row.uploaded_at_ms,
        downloaded_at_ms: row.downloaded_at_ms,
        acknowledged_at_ms: row.acknowledged_at_ms,
        receipt: row.receipt,
        supersedes: pack_id(row.supersedes, "supersedes")?,
        superseded_by: pack_id(row.superseded_by, "superseded_by")?,
        recall: row.recall,
        recalled_at_ms: row.recalled_at_ms,
        deleted_at_ms: row.deleted_at_ms,
        purged_at_ms: row.purged_at_ms,
        purge_reason: row.purge_reason,
        forwards: pack_id(row.forwards, "forwards")?,
        readdressed_as: pack_id(row.readdressed_as, "readdressed_as")?,
        relay_to: row.relay_to,
        relayed_at_ms: row.relayed_at_ms,
        relayed_from: row.relayed_from,
    })
}

/// Rows of one page query (`limit + 1` asked for) as a [`super::Page`].
pub fn page_from_rows(rows: Vec<PackRow>, limit: u32) -> Result<super::Page> {
    let more = rows.len() > limit as usize;
    let packs = rows
        .into_iter()
        .take(limit as usize)
        .map(pack_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(super::Page { packs, more })
}

/// A key row as a [`SchoolKey`].
pub fn key_from_row(row: KeyRow) -> Result<SchoolKey> {
    let (key_id, recipient, signing, label, roles, created, revoked, endorsement, by, signature) =
        row;
    let endorsement = baton::trust::signature_bytes(&endorsement.unwrap_or_default())
        .map_err(|e| corrupt(format!("key {key_id}: endorsement: {e}")))?;
    let revocation = baton::trust::Revocation::from_parts(
        &by.unwrap_or_default(),
        &signature.unwrap_or_default(),
    )
    .map_err(|e| corrupt(format!("key {key_id}: revocation: {e}")))?;
    let public =
        PublicKey::new(&recipient, &signing).map_err(|e| corrupt(format!("key {key_id}: {e}")))?;
    let roles = roles_from_text(&roles, &format!("key {key_id}"))?;
    Ok(SchoolKey {
        public,
        label,
        roles,
        created_at_ms: created,
        revoked_at_ms: revoked,
        endorsement,
        revocation,
    })
}

/// Roles as stored: names, comma separated.
pub fn roles_text(roles: &[Role]) -> String {
    baton::keys::role_names(roles, ",")
}

/// Stored roles (`what` names the row, for the error).
pub fn roles_from_text(text: &str, what: &str) -> Result<Vec<Role>> {
    text.split(',')
        .map(|r| {
            r.parse::<Role>()
                .map_err(|_| corrupt(format!("{what}: role {r:?}")))
        })
        .collect()
}

/// The audit log's head from its last row `(seq, hash)`: how many entries
/// it holds and that hash.
pub fn head((seq, hash): (i64, Vec<u8>)) -> Result<(u64, [u8; 32])> {
    let entries = u64::try_from(seq).map_err(|_| corrupt(format!("audit seq {seq}")))?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt(format!("audit entry {seq}: hash length")))?;
    Ok((entries, hash))
}

/// The query that reads the audit log's last row (its head).
pub const HEAD_SQL: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";

/// The entry that follows the chain head `last` (`None`: the log is empty).
/// The entries that follow `last` for `events`, in order.
pub fn chain_entries(
    mut last: Option<(i64, Vec<u8>)>,
    events: &[(i64, &audit::Event)],
) -> Vec<audit::Entry> {
    events
        .iter()
        .map(|(at_ms, event)| {
            let entry = next_entry(last.take(), *at_ms, event);
            last = Some((entry.seq, entry.hash.clone()));
            entry
        })
        .collect()
}

pub fn next_entry(last: Option<(i64, Vec<u8>)>, now_ms: i64, event: &audit::Event) -> audit::Entry {
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, audit::GENESIS.to_vec()),
    };
    let hash = audit::link(
        seq,
        now_ms,
        &event.actor,
        event.action,
        &event.subject,
        &prev,
    );
    audit::Entry {
        seq,
        at_ms: now_ms,
        actor: event.actor.clone(),
        action: event.action.to_string(),
        subject: event.subject.clone(),
        prev_hash: prev,
        hash: hash.to_vec(),
    }
}

/// An audit row as an [`audit::Entry`].
pub fn entry_from_row(row: AuditRow) -> audit::Entry {
    let (seq, at_ms, actor, action, subject, prev_hash, hash) = row;
    audit::Entry {
        seq,
        at_ms,
        actor,
        action,
        subject,
        prev_hash,
        hash,
    }
}

/// The `Watch` notice for a visible pack.
pub fn arrival(pack: &StoredPack) -> Arrival {
    Arrival {
        to: pack.to,
        header: pack.header.clone(),
        uploaded_at_ms: pack.uploaded_at_ms,
    }
}
