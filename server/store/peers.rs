//! Peers: other trusts' daemons this one federates with, added from their
//! signed descriptors (`batond admin peer add`) and removed by name. Each
//! change is audited in its transaction (`peer.add`, `peer.remove`, with
//! the peer's name and key fingerprint).
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
}

/// The trusts' daemons this one peers with.
pub trait Peers: Send + Sync {
    /// Adds `peer` and audits `event`; `Conflict` if a peer of that name,
    /// or with that daemon key, is already added.
    fn add_peer(&self, peer: &Peer, event: audit::Event)
    -> impl Future<Output = Result<()>> + Send;

    /// Every peer, by name.
    fn peers(&self) -> impl Future<Output = Result<Vec<Peer>>> + Send;

    /// Removes the peer `name` and audits `event`; `false` if there was none.
    fn remove_peer(
        &self,
        name: &str,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// A stored row: name, url, certificate, pin, key, valid until, added at.
pub type PeerRow = (String, String, String, Vec<u8>, Vec<u8>, i64, i64);

/// A row as a [`Peer`].
pub fn peer_from_row(row: PeerRow) -> Result<Peer> {
    let (name, url, ca_cert_pem, pin, key, valid_until_ms, added_at_ms) = row;
    let corrupt = |what: &str| super::rows::corrupt(format!("peer {name:?}: {what}"));
    Ok(Peer {
        ca_cert_sha256: pin.try_into().map_err(|_| corrupt("pin length"))?,
        daemon_key: key.try_into().map_err(|_| corrupt("key length"))?,
        name,
        url,
        ca_cert_pem,
        valid_until_ms,
        added_at_ms,
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
                let (taken,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM peers WHERE name = $1 OR daemon_key = $2")
                        .bind(&peer.name)
                        .bind(peer.daemon_key.as_slice())
                        .fetch_one(&mut *tx)
                        .await?;
                if taken > 0 {
                    return Err($crate::store::StoreError::Conflict("peer"));
                }
                sqlx::query(
                    "INSERT INTO peers (name, url, ca_cert_pem, ca_cert_sha256, daemon_key, \
                     valid_until_ms, added_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&peer.name)
                .bind(&peer.url)
                .bind(&peer.ca_cert_pem)
                .bind(peer.ca_cert_sha256.as_slice())
                .bind(peer.daemon_key.as_slice())
                .bind(peer.valid_until_ms)
                .bind(peer.added_at_ms)
                .execute(&mut *tx)
                .await?;
                append(&mut tx, peer.added_at_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn peers(&self) -> $crate::store::Result<Vec<$crate::store::peers::Peer>> {
                let rows: Vec<$crate::store::peers::PeerRow> = sqlx::query_as(
                    "SELECT name, url, ca_cert_pem, ca_cert_sha256, daemon_key, \
                     valid_until_ms, added_at_ms FROM peers ORDER BY name",
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
                if removed {
                    append(&mut tx, now_ms, &event).await?;
                }
                tx.commit().await?;
                Ok(removed)
            }
        }
    };
}
