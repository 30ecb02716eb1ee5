//! Peers: other trusts' daemons this one federates with, added from their
//! signed descriptors (`batond admin peer add`) and removed by name. Each
//! change is audited in its transaction (`peer.add`, `peer.remove`, with
//! the peer's name and key fingerprint).
//!
//! Each peer's directory (the schools it serves, as its daemon last
//! answered `Federation.PeerSchools`) is kept here too, replaced whole at
//! each sync, with how the last sync went ([`PeerSync`]), so the schools of
//! a peer that is down stay known.
//!
//! [`peers_store!`] writes the statements once for both backends.

use std::future::Future;

use super::error::Result;
use crate::audit;

/// A peer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its name, unique here.
    pub name: String,
    /// Its federation listener, `https://HOST:PORT`.
    pub url: String,
    /// Its federation CA certificate (PEM).
    pub ca_cert_pem: String,
    /// SHA-256 of that certificate (DER): the pin.
    pub ca_cert_sha256: [u8; 32],
    /// Its daemon's Ed25519 key.
    pub daemon_key: [u8; 32],
    /// Until when its descriptor was valid.
    pub valid_until_ms: i64,
    /// When it was added here.
    pub added_at_ms: i64,
    /// The local authority codes (3 digits) it may list schools for, as
    /// the data-sharing agreement says; empty: any.
    pub la_codes: Vec<String>,
}

/// How the directory sync with one peer last went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSync {
    /// The peer's name.
    pub name: String,
    /// When its directory was last read whole.
    pub synced_at_ms: Option<i64>,
    /// When it was last tried.
    pub tried_at_ms: Option<i64>,
    /// Why the last try failed; `None` if it did not.
    pub error: Option<String>,
    /// How many schools it serves, as last read (its escrow not counted).
    pub schools: i64,
    /// Whether it listed its escrow.
    pub escrow: bool,
}

/// One school of a peer's directory as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSchool {
    /// The peer serving it.
    pub peer: String,
    /// Its LAESTAB.
    pub laestab: String,
    /// The `School` message, encoded.
    pub school: Vec<u8>,
}

/// The trusts' daemons this one peers with.
pub trait Peers: Send + Sync {
    /// Adds `peer` and audits `event`; `Conflict` if a peer of that name,
    /// with that daemon key or with that federation CA, is already added.
    fn add_peer(&self, peer: &Peer, event: audit::Event)
    -> impl Future<Output = Result<()>> + Send;

    /// Every peer, by name.
    fn peers(&self) -> impl Future<Output = Result<Vec<Peer>>> + Send;

    /// Removes the peer `name` and its directory, and audits `event`;
    /// `false` if there was none.
    fn remove_peer(
        &self,
        name: &str,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Replaces the directory of `peer` with `schools` (LAESTAB, encoded
    /// `School`) read at `now_ms`; `false` (nothing written) if the peer
    /// has been removed meanwhile.
    fn replace_peer_schools(
        &self,
        peer: &str,
        schools: &[(String, Vec<u8>)],
        now_ms: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Records that reading the directory of `peer` failed with `error`
    /// at `now_ms`; its schools stay as last read.
    fn peer_sync_failed(
        &self,
        peer: &str,
        error: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every peer's schools, by peer and LAESTAB.
    fn peer_schools(&self) -> impl Future<Output = Result<Vec<PeerSchool>>> + Send;

    /// How the last sync with each peer went, by name.
    fn peer_syncs(&self) -> impl Future<Output = Result<Vec<PeerSync>>> + Send;
}

/// A stored row: name, url, certificate, pin, key, valid until, added at,
/// local authority codes.
pub type PeerRow = (String, String, String, Vec<u8>, Vec<u8>, i64, i64, String);

/// A row as a [`Peer`].
pub fn peer_from_row(row: PeerRow) -> Result<Peer> {
    let (name, url, ca_cert_pem, pin, key, valid_until_ms, added_at_ms, la_codes) = row;
    let corrupt = |what: &str| super::rows::corrupt(format!("peer {name:?}: {what}"));
    Ok(Peer {
        ca_cert_sha256: pin.try_into().map_err(|_| corrupt("pin length"))?,
        daemon_key: key.try_into().map_err(|_| corrupt("key length"))?,
        name,
        url,
        ca_cert_pem,
        valid_until_ms,
        added_at_ms,
        la_codes: la_codes
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Implements [`Peers`] for `$store` (with `begin` and `append` of its
/// backend in scope).
macro_rules! peers_store {
    ($store:ty) => {
        impl $crate::store::peers::Peers for $store {
            async fn add_peer(
                &self,
                peer: &$crate::store::peers::Peer,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<()> {
                let mut tx = begin(&self.pool).await?;
                let (taken,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM peers WHERE name = $1 OR daemon_key = $2 \
                         OR ca_cert_sha256 = $3",
                )
                .bind(&peer.name)
                .bind(peer.daemon_key.as_slice())
                .bind(peer.ca_cert_sha256.as_slice())
                .fetch_one(&mut *tx)
                .await?;
                if taken > 0 {
                    return Err($crate::store::StoreError::Conflict("peer"));
                }
                sqlx::query(
                    "INSERT INTO peers (name, url, ca_cert_pem, ca_cert_sha256, daemon_key, \
                     valid_until_ms, added_at_ms, la_codes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&peer.name)
                .bind(&peer.url)
                .bind(&peer.ca_cert_pem)
                .bind(peer.ca_cert_sha256.as_slice())
                .bind(peer.daemon_key.as_slice())
                .bind(peer.valid_until_ms)
                .bind(peer.added_at_ms)
                .bind(peer.la_codes.join(","))
                .execute(&mut *tx)
                .await?;
                append(&mut tx, peer.added_at_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn peers(&self) -> $crate::store::Result<Vec<$crate::store::peers::Peer>> {
                let rows: Vec<$crate::store::peers::PeerRow> = sqlx::query_as(
                    "SELECT name, url, ca_cert_pem, ca_cert_sha256, daemon_key, \
                     valid_until_ms, added_at_ms, la_codes FROM peers ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map($crate::store::peers::peer_from_row)
                    .collect()
            }

            async fn remove_peer(
                &self,
                name: &str,
                now_ms: i64,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<bool> {
                let mut tx = begin(&self.pool).await?;
                let done = sqlx::query("DELETE FROM peers WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                let removed = done.rows_affected() > 0;
                sqlx::query("DELETE FROM peer_schools WHERE peer = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if removed {
                    append(&mut tx, now_ms, &event).await?;
                }
                tx.commit().await?;
                Ok(removed)
            }

            async fn replace_peer_schools(
                &self,
                peer: &str,
                schools: &[(String, Vec<u8>)],
                now_ms: i64,
            ) -> $crate::store::Result<bool> {
                let mut tx = begin(&self.pool).await?;
                let found = sqlx::query(
                    "UPDATE peers SET synced_at_ms = $1, sync_tried_at_ms = $1, \
                     sync_error = NULL WHERE name = $2",
                )
                .bind(now_ms)
                .bind(peer)
                .execute(&mut *tx)
                .await?;
                if found.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM peer_schools WHERE peer = $1")
                    .bind(peer)
                    .execute(&mut *tx)
                    .await?;
                for (laestab, school) in schools {
                    sqlx::query(
                        "INSERT INTO peer_schools (peer, laestab, school) VALUES ($1, $2, $3)",
                    )
                    .bind(peer)
                    .bind(laestab)
                    .bind(school.as_slice())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn peer_sync_failed(
                &self,
                peer: &str,
                error: &str,
                now_ms: i64,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "UPDATE peers SET sync_tried_at_ms = $1, sync_error = $2 WHERE name = $3",
                )
                .bind(now_ms)
                .bind(error)
                .bind(peer)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn peer_schools(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::peers::PeerSchool>> {
                let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
                    "SELECT peer, laestab, school FROM peer_schools ORDER BY peer, laestab",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(peer, laestab, school)| $crate::store::peers::PeerSchool {
                        peer,
                        laestab,
                        school,
                    })
                    .collect())
            }

            async fn peer_syncs(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::peers::PeerSync>> {
                type Row = (String, Option<i64>, Option<i64>, Option<String>, i64, i64);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT p.name, p.synced_at_ms, p.sync_tried_at_ms, p.sync_error, \
                     (SELECT COUNT(*) FROM peer_schools s WHERE s.peer = p.name \
                      AND s.laestab <> 'XXXXXXX'), \
                     (SELECT COUNT(*) FROM peer_schools s WHERE s.peer = p.name \
                      AND s.laestab = 'XXXXXXX') \
                     FROM peers p ORDER BY p.name",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, synced_at_ms, tried_at_ms, error, schools, escrow)| {
                        $crate::store::peers::PeerSync {
                            name,
                            synced_at_ms,
                            tried_at_ms,
                            error,
                            schools,
                            escrow: escrow > 0,
                        }
                    })
                    .collect())
            }
        }
    };
}
