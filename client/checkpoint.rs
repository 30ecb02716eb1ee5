//! The newest signed audit checkpoint this home has seen
//! (`checkpoint.json`). Every upload and acknowledgement answer carries
//! one; each must show the server's audit log no shorter than the one kept,
//! and, at the same length, with the same head. A log that went backwards
//! or was rewritten is reported loudly, and the kept checkpoint is what the
//! trust's data protection officer checks the log against (`baton
//! checkpoint`, then `batond admin audit verify --checkpoint FILE`).

use anyhow::{Result, bail};
use baton::api::v1;
use baton::checkpoint::{Checkpoint, Progress};

use crate::home::{Home, read_json, write_json};

/// File name in the home.
const FILE: &str = "checkpoint.json";

/// The checkpoint kept, and the newest seen in this run.
pub struct Book {
    kept: Option<Checkpoint>,
    newest: Option<Checkpoint>,
    problems: Vec<String>,
}

impl Book {
    /// The home's kept checkpoint (none yet on a new home).
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.path(FILE);
        let kept = if path.exists() {
            Some(read_json(&path)?)
        } else {
            None
        };
        Ok(Self {
            kept,
            newest: None,
            problems: Vec::new(),
        })
    }

    /// Checks one answer's checkpoint against the kept one.
    pub fn observe(&mut self, wire: Option<&v1::AuditCheckpoint>) {
        let Some(wire) = wire else {
            return;
        };
        let checkpoint = match Checkpoint::try_from(wire) {
            Ok(c) => c,
            Err(e) => {
                self.problems.push(format!(
                    "the server sent an audit checkpoint that does not verify ({e})"
                ));
                return;
            }
        };
        if let Some(kept) = &self.kept {
            match checkpoint.progress_from(kept) {
                Progress::Forward => {}
                Progress::Truncated { before, now } => self.problems.push(format!(
                    "the server's audit log went backwards: it had {before} entries, now {now}"
                )),
                Progress::Rewritten { entries } => self.problems.push(format!(
                    "the server's audit log was rewritten: entry {entries} has another hash than before"
                )),
                Progress::OtherKey => {
                    eprintln!(
                        "warning: the server signs its audit checkpoints with another key than before (was the server rebuilt?); the old checkpoint is kept as checkpoint.previous.json for the trust's data protection officer"
                    );
                }
            }
        }
        let newer = self.newest.as_ref().is_none_or(|n| {
            checkpoint.signing_key != n.signing_key || checkpoint.entries > n.entries
        });
        if newer {
            self.newest = Some(checkpoint);
        }
    }

    /// Keeps the newest checkpoint seen, then fails if any answer showed a
    /// log that went backwards or was rewritten.
    pub fn finish(self, home: &Home) -> Result<()> {
        if let Some(newest) = &self.newest {
            if let Some(kept) = &self.kept
                && kept.signing_key != newest.signing_key
            {
                write_json(&home.path("checkpoint.previous.json"), kept)?;
            }
            let keep = self
                .kept
                .as_ref()
                .is_none_or(|k| k.signing_key != newest.signing_key || newest.entries > k.entries);
            if keep && self.problems.is_empty() {
                write_json(&home.path(FILE), newest)?;
            }
        }
        if !self.problems.is_empty() {
            for p in &self.problems {
                eprintln!("AUDIT: {p}");
            }
            bail!(
                "the server's audit log does not match what it signed before: give {} to the trust's data protection officer (`batond admin audit verify --checkpoint FILE` checks the log against it)",
                home.path(FILE).display()
            );
        }
        Ok(())
    }
}

/// `baton checkpoint`: prints the kept checkpoint, for the DPO.
pub fn print(home: &Home) -> Result<()> {
    let path = home.path(FILE);
    if !path.exists() {
        bail!("no audit checkpoint yet: one is kept after the first send or acknowledgement");
    }
    let kept: Checkpoint = read_json(&path)?;
    println!("{}", serde_json::to_string_pretty(&kept)?);
    Ok(())
}
