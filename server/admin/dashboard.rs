//! `batond admin dashboard link`: a one-time sign-in link to the trust
//! dashboard. The token is random; the store keeps only its SHA-256 and
//! expiry, and the making is audited (`dashboard.link`). The link's
//! address is the one the serving daemon recorded in the data directory,
//! or `--url`.

use std::io::Write;

use anyhow::{Context as _, bail};

use crate::audit::Event;
use crate::config::Config;
use crate::dashboard::{LINK_MINUTES, URL_FILE, token_hash};
use crate::store::{Store, now_ms};

/// The dashboard's address: `url`, else what `serve` recorded.
fn base_url(config: &Config, url: Option<&str>) -> anyhow::Result<String> {
    if let Some(url) = url {
        if !url.starts_with("https://") {
            bail!("--url {url:?}: the dashboard is served over HTTPS; give https://HOST:PORT");
        }
        return Ok(url.trim_end_matches('/').to_string());
    }
    let path = config.data_dir.join(URL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().starts_with("https://") => {
            Ok(text.trim().trim_end_matches('/').to_string())
        }
        _ => bail!(
            "no dashboard address in {}: start `batond serve` with --http-listen ADDR (or http_listen in the config) \
             on this data directory, or give the address with --url https://HOST:PORT",
            path.display()
        ),
    }
}

/// Makes a link and prints it (`{"url", "expires_at"}` with `json`).
pub async fn link<S: Store>(
    store: &S,
    config: &Config,
    url: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let base = base_url(config, url)?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    let now = now_ms();
    let expires = now + LINK_MINUTES * 60 * 1000;
    store
        .add_dashboard_link(
            token_hash(&token),
            expires,
            now,
            Event::by_admin("dashboard.link", "dashboard"),
        )
        .await
        .context("storing the sign-in link")?;
    let link = format!("{base}/signin?t={token}");
    let expires_at = crate::audit::time(expires);
    if json {
        let value = serde_json::json!({ "url": link, "expires_at": expires_at });
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "{link}")?;
        writeln!(
            out,
            "Open it in a browser within {LINK_MINUTES} minutes (until {expires_at}); it works once. \
             The browser must trust the daemon's certificate (the generated CA is DATA_DIR/tls/ca.pem)."
        )?;
    }
    Ok(())
}
