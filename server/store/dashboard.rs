//! Sign-in links to the trust dashboard: `batond admin dashboard link`
//! stores the SHA-256 of a random token with its expiry, and the daemon
//! serving the page redeems it once. Both are audited in the same
//! transaction (`dashboard.link`, `dashboard.signin`). The store keeps
//! links, not sessions: a link may be made on any node's command line and
//! used on the node serving the page.
//!
//! [`dashboard_store!`] writes the statements once for both backends.

use std::future::Future;

use super::error::Result;
use crate::audit;

/// One-time sign-in links.
pub trait DashboardLinks: Send + Sync {
    /// Stores a link (the token's SHA-256) valid until `expires_at_ms`,
    /// dropping links already expired, and audits `event`.
    fn add_dashboard_link(
        &self,
        token_sha256: [u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Uses the link up: `true` (and `event` audited) if it existed and had
    /// not expired; it is gone afterwards either way.
    fn redeem_dashboard_link(
        &self,
        token_sha256: [u8; 32],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// Implements [`DashboardLinks`] for `$store` (with `begin` and `append`
/// of its backend in scope).
macro_rules! dashboard_store {
    ($store:ty) => {
        impl $crate::store::dashboard::DashboardLinks for $store {
            async fn add_dashboard_link(
                &self,
                token_sha256: [u8; 32],
                expires_at_ms: i64,
                now_ms: i64,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<()> {
                let mut tx = begin(&self.pool).await?;
                sqlx::query("DELETE FROM dashboard_links WHERE expires_at_ms <= $1")
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO dashboard_links (token_sha256, expires_at_ms) VALUES ($1, $2)",
                )
                .bind(token_sha256.as_slice())
                .bind(expires_at_ms)
                .execute(&mut *tx)
                .await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn redeem_dashboard_link(
                &self,
                token_sha256: [u8; 32],
                now_ms: i64,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<bool> {
                let mut tx = begin(&self.pool).await?;
                let row: Option<(i64,)> = sqlx::query_as(
                    "DELETE FROM dashboard_links WHERE token_sha256 = $1 RETURNING expires_at_ms",
                )
                .bind(token_sha256.as_slice())
                .fetch_optional(&mut *tx)
                .await?;
                let valid = row.is_some_and(|(expires,)| expires > now_ms);
                if valid {
                    append(&mut tx, now_ms, &event).await?;
                }
                tx.commit().await?;
                Ok(valid)
            }
        }
    };
}
