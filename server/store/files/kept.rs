//! Staging files kept open between an upload's chunks.
//!
//! Why: opening a staging file for every chunk (and closing it again) was
//! ~5 % of the daemon's CPU for 1 MB packs on the benchmark machine (a
//! path walk, a permission check and a file object a chunk; BENCHMARKS.md,
//! round 17). An upload's chunks come one after another, so the file it
//! wrote last is taken from here for the next chunk and for its seal.
//!
//! At most [`KEPT`] files are kept; beyond that a file is closed after its
//! chunk and opened again for the next, as before, so uploads that stop
//! half-way (or a client starting many) cannot hold more descriptors than
//! that. Every path that removes or renames a staging file takes its entry
//! first ([`Kept::forget`], [`Kept::clear`]), so nothing is ever written to
//! a file no longer in staging.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Mutex;

/// Staging files kept open at most.
pub(super) const KEPT: usize = 64;

/// An open staging file, and whether it is open for direct writes now.
#[derive(Debug)]
pub(super) struct Staging {
    pub(super) file: File,
    /// `O_DIRECT` is set on the file (see [`super::direct`]).
    pub(super) direct: bool,
}

/// The open staging files, by upload id.
#[derive(Debug, Default)]
pub(super) struct Kept {
    files: Mutex<HashMap<String, Staging>>,
}

impl Kept {
    /// Takes upload `id`'s open file, if kept.
    pub(super) fn take(&self, id: &str) -> Option<Staging> {
        self.files.lock().ok()?.remove(id)
    }

    /// Keeps upload `id`'s open file for its next chunk, unless [`KEPT`]
    /// are kept already (it is closed then).
    pub(super) fn keep(&self, id: String, staging: Staging) {
        if let Ok(mut files) = self.files.lock()
            && files.len() < KEPT
        {
            files.insert(id, staging);
        }
    }

    /// Closes upload `id`'s file, if kept (before it is removed or renamed).
    pub(super) fn forget(&self, id: &str) {
        drop(self.take(id));
    }

    /// Closes every kept file (before staging is cleared).
    pub(super) fn clear(&self) {
        if let Ok(mut files) = self.files.lock() {
            files.clear();
        }
    }

    /// How many files are kept open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.files.lock().map_or(0, |files| files.len())
    }
}
