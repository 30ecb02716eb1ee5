//! Retention: how long the daemon keeps a pack's ciphertext. The receiving
//! school holds the record once it has acknowledged it, and the trust's
//! data protection officer wants the server's copy gone; a pack nobody
//! collects is not kept forever either. Set in the `[retention]` table of
//! the TOML file, on `batond serve`, or per run of `batond admin purge`.

use clap::Args;
use serde::Deserialize;

use crate::store::Cutoffs;

/// Retention as given (flags, environment, `[retention]`): every field optional.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionArgs {
    /// Days an acknowledged pack's ciphertext is kept after its receipt
    /// [default: 30].
    #[arg(
        long = "retention-acknowledged-days",
        env = "BATON_RETENTION_ACKNOWLEDGED_DAYS",
        value_name = "DAYS"
    )]
    pub acknowledged_days: Option<u32>,
    /// Days a pack never acknowledged is kept after it was stored; then it
    /// is purged and its sender sees "not collected" [default: 120].
    #[arg(
        long = "retention-unacknowledged-days",
        env = "BATON_RETENTION_UNACKNOWLEDGED_DAYS",
        value_name = "DAYS"
    )]
    pub unacknowledged_days: Option<u32>,
}

/// The resolved retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days after its receipt an acknowledged pack is kept.
    pub acknowledged_days: u32,
    /// Days after it was stored an unacknowledged pack is kept.
    pub unacknowledged_days: u32,
}

/// The `[retention]` table of `batond default-config`.
pub const DEFAULT_RETENTION: &str = r#"
# How long packs' ciphertext stays on the server. The daemon purges hourly
# (and `batond admin purge` on demand): the ciphertext goes, the pack's
# header, receipt and times stay, and a deletion record joins the audit log.
[retention]
# Days after the destination's receipt.
acknowledged_days = 30
# Days after upload for a pack never acknowledged (its sender sees "not
# collected" and can chase the destination).
unacknowledged_days = 120
"#;

const DAY_MS: i64 = 86_400_000;

impl Retention {
    /// Flags over the file over the defaults.
    pub fn resolve(flags: &RetentionArgs, file: &RetentionArgs) -> Self {
        Self {
            acknowledged_days: flags
                .acknowledged_days
                .or(file.acknowledged_days)
                .unwrap_or(30),
            unacknowledged_days: flags
                .unacknowledged_days
                .or(file.unacknowledged_days)
                .unwrap_or(120),
        }
    }

    /// The cut-off times at `now_ms`.
    pub fn cutoffs(&self, now_ms: i64) -> Cutoffs {
        Cutoffs {
            acknowledged_before_ms: now_ms - i64::from(self.acknowledged_days) * DAY_MS,
            uploaded_before_ms: now_ms - i64::from(self.unacknowledged_days) * DAY_MS,
        }
    }
}
