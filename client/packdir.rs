//! Pack folders on disk: reading one to send (`record.json` plus every other
//! file as an attachment), and writing a pulled pack into
//! `OUT/<from>/<UPN>/` atomically (staged, then renamed into place).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use baton::pack::AttachmentMeta;
use baton::record::TransitionRecord;

/// A pack folder read from disk and checked.
pub struct PackDir {
    /// Its record.
    pub record: TransitionRecord,
    /// Attachments: where each is, and what it is.
    pub attachments: Vec<(PathBuf, AttachmentMeta)>,
}

impl PackDir {
    /// Reads a pack folder. Returns every problem found, each naming the
    /// file (and field or line), or the folder.
    pub fn read(path: &Path, today: time::Date) -> Result<Self, Vec<String>> {
        let shown = path.display();
        if !path.is_dir() {
            return Err(vec![format!(
                "{shown}: not a folder (a pack folder holds record.json and attachments)"
            )]);
        }
        let record_path = path.join("record.json");
        let text = match std::fs::read_to_string(&record_path) {
            Ok(t) => t,
            Err(e) => return Err(vec![format!("{}: {e}", record_path.display())]),
        };
        let record = match TransitionRecord::from_json(&text) {
            Ok(r) => r,
            Err(e) => return Err(vec![format!("{}: {e}", record_path.display())]),
        };
        let mut problems: Vec<String> = record
            .problems(today)
            .iter()
            .map(|p| format!("{}: {p}", record_path.display()))
            .collect();
        let attachments = match read_attachments(path) {
            Ok(found) => found,
            Err(mut more) => {
                problems.append(&mut more);
                Vec::new()
            }
        };
        if problems.is_empty() {
            Ok(Self {
                record,
                attachments,
            })
        } else {
            Err(problems)
        }
    }
}

/// Lists the attachments in a folder (name, media type, size), or every
/// problem.
pub fn read_attachments(dir: &Path) -> Result<Vec<(PathBuf, AttachmentMeta)>, Vec<String>> {
    let files = list_attachments(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(problem) = baton::pack::contents::check_name(&name) {
            problems.push(format!("{}: cannot be attached: {problem}", file.display()));
            continue;
        }
        // Only listed here: sealing reads and hashes each file once.
        match std::fs::File::open(&file).and_then(|f| f.metadata()) {
            Ok(m) => found.push((file, AttachmentMeta::listed(&name, m.len()))),
            Err(e) => problems.push(format!("{}: {e}", file.display())),
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

/// Every regular, non-hidden file in a pack folder except `record.json` and
/// `pack.json`, sorted by name. Sub-folders are an error: nothing is dropped
/// silently.
fn list_attachments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "record.json" || name == "pack.json" || name.starts_with('.') {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            return Err(std::io::Error::other(format!(
                "contains the sub-folder {name:?}; a pack folder holds only files"
            )));
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// A staging folder beside the output, renamed into place when complete.
/// It and the folders it goes into are created readable by their owner
/// only (0700): they hold pupils' records.
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A new, empty staging folder under `out/.baton-staging/`.
    pub fn new(out: &Path, name: &str) -> Result<Self> {
        let dir = out.join(".baton-staging").join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        crate::home::create_private_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the staged folder to `target` (which must not exist), fsyncing first.
    pub fn publish(self, target: &Path) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            std::fs::File::open(entry?.path())?.sync_all()?;
        }
        if target.exists() {
            bail!("{} already exists", target.display());
        }
        let parent = target.parent().context("an output folder has a parent")?;
        crate::home::create_private_dir_all(parent)?;
        std::fs::rename(&self.dir, target)
            .with_context(|| format!("moving the pulled pack to {}", target.display()))?;
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
