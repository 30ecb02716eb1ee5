//! What the page does, done by the commands themselves: the page runs this
//! same `baton` program (`send`, `pull`, `ack`, with `--json`) in this
//! home, so sending, pulling and acknowledging have one implementation and
//! the page shows exactly what the command did, pupil by pupil, and every
//! message it gave.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, Result};
use tokio::io::AsyncBufReadExt as _;

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

/// Runs `baton ARGS` in `home` and waits for it (callers ask for `--json`
/// where the command has it), with no terminal: a key that needs a
/// passphrase takes it from `BATON_PASSPHRASE`, as the page's own did.
pub async fn baton(home: &Home, args: &[&str]) -> Result<Ran> {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    run_reporting(home.root(), &args, &Shared::default()).await
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

/// A command running for the page, which shows its progress.
#[derive(Default)]
pub struct Job {
    /// Packs done so far, of `total` (from its `progress N/M` lines).
    pub done: usize,
    /// Packs in all (0 until the command knows).
    pub total: usize,
    /// What it said, once it finished.
    pub finished: Option<Ran>,
}

/// A job shared between its task and the page.
pub type Shared = Arc<Mutex<Job>>;

/// Locks a job (nothing a panicking holder could leave half-done).
pub fn lock(job: &Shared) -> std::sync::MutexGuard<'_, Job> {
    job.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts `baton ARGS` in `home` in the background; the job fills in as
/// it runs (from the progress lines `send` prints for the page).
pub fn start(home: &Home, args: Vec<String>) -> Shared {
    let job: Shared = Arc::default();
    let shared = Arc::clone(&job);
    let root = home.root().to_path_buf();
    tokio::spawn(async move {
        let finished = run_reporting(&root, &args, &shared)
            .await
            .unwrap_or_else(|e| Ran {
                ok: false,
                json: serde_json::Value::Null,
                messages: vec![format!("{e:#}")],
            });
        lock(&shared).finished = Some(finished);
    });
    job
}

/// Runs `baton ARGS` in the home at `root`, asking for progress lines and
/// counting them into `job`; its answer and its other messages.
async fn run_reporting(root: &Path, args: &[String], job: &Shared) -> Result<Ran> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = tokio::process::Command::new(exe)
        .env("BATON_HOME", root)
        .env("BATON_PROGRESS_LINES", "1")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running baton")?;
    let mut stdout = child.stdout.take().context("no output from baton")?;
    let stderr = child.stderr.take().context("no messages from baton")?;
    let out = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut bytes).await;
        bytes
    });
    let mut messages = Vec::new();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Some(line) = lines.next_line().await? {
        let progress = line
            .strip_prefix("progress ")
            .and_then(|p| p.split_once('/'))
            .and_then(|(d, t)| Some((d.parse().ok()?, t.parse().ok()?)));
        match progress {
            Some((done, total)) => {
                let mut j = lock(job);
                j.done = done;
                j.total = total;
            }
            None if !line.trim().is_empty() => messages.push(line),
            None => {}
        }
    }
    let status = child.wait().await.context("waiting for baton")?;
    let bytes = out.await.unwrap_or_default();
    Ok(Ran {
        ok: status.success(),
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        messages,
    })
}
