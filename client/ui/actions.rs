//! What the page does, done by the commands themselves: the page runs this
//! same `baton` program (`send`, `pull`, `ack`, with `--json`) in this
//! home, so sending, pulling and acknowledging have one implementation and
//! the page shows exactly what the command did, pupil by pupil, and every
//! message it gave.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::home::Home;

/// What one run of a command said.
pub struct Ran {
    /// Whether it succeeded.
    pub ok: bool,
    /// Its JSON answer (`null` if it gave none).
    pub json: serde_json::Value,
    /// Its messages (standard error), one per line.
    pub messages: Vec<String>,
}

/// Runs `baton ARGS` in `home` (callers ask for `--json` where the command
/// has it), with no terminal: a key that needs a passphrase takes it from
/// `BATON_PASSPHRASE`, as the page's own did.
pub async fn baton(home: &Home, args: &[&str]) -> Result<Ran> {
    let exe = std::env::current_exe().context("finding this program")?;
    let out = tokio::process::Command::new(exe)
        .env("BATON_HOME", home.root())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running baton")?;
    Ok(Ran {
        ok: out.status.success(),
        json: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        messages: String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect(),
    })
}

/// Where pulled records go unless the user says otherwise: the user's
/// documents folder, else beside this home.
pub fn default_out(home: &Home) -> String {
    directories::UserDirs::new()
        .and_then(|u| u.document_dir().map(Path::to_path_buf))
        .map_or_else(
            || home.root().join("received"),
            |d| d.join("Baton").join("received"),
        )
        .display()
        .to_string()
}
