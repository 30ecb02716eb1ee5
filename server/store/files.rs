//! Ciphertext files: on SQLite (one node owns the data directory) a pack of
//! one chunk or more is kept in a file of its own beside the database, not
//! in chunk rows, so a large pack is written once, sequentially, near the
//! disk's own speed (SQLite writes a blob twice, to the log and then to the
//! database, a page at a time). Small packs (a single partial chunk) stay
//! in rows, written with their pack row by the group committer.
//!
//! The life of a file, and the one recovery rule:
//! - chunks are appended to `baton.db-ciphertext/staging/UPLOAD_ID` (the
//!   folder is named after the database file) as they arrive;
//! - at commit the file is synced, renamed to `baton.db-ciphertext/UPLOAD_ID` and
//!   the folder synced, all *before* the pack row is committed, so a
//!   committed row always has its file on stable storage;
//! - when a pack's ciphertext is deleted (recall, supersede, forwarding,
//!   retention) the row is committed first, then the file is overwritten
//!   with zeros and removed;
//! - **on start, everything in `staging/` is removed, and so is every file
//!   no held pack row names** (a crash between rename and commit, or
//!   between commit and removal). At run time only files whose rows say
//!   deleted are swept (an upload in flight has a file and no row yet).
//!
//! A backup (`admin backup`, another process) holds the folder's `.lock`
//! exclusively while it copies the database and the files; the daemon
//! removes a file only if it can take that lock shared at once, and leaves
//! it to the next sweep otherwise, so a copy never names a file it lacks.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Result, StoreError};

mod direct;
mod kept;

/// Ciphertext is stored and downloaded in pieces of at most this size. An
/// upload holds one such piece (and the store's copy of it) while staging,
/// so with many uploads at once this sets the daemon's memory.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What the folder's name adds to the database file's, as SQLite's own
/// `-wal` and `-shm` do: one folder a database, however many share a
/// directory.
const SUFFIX: &str = "-ciphertext";
const STAGING: &str = "staging";
const LOCK: &str = ".lock";

/// Where a committing upload's ciphertext is.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealed {
    /// In its file, synced and in place: this many chunks and bytes.
    InFile {
        /// Chunks of [`CHUNK_BYTES`] (the last may be shorter).
        chunks: i64,
        /// Bytes in the file.
        bytes: u64,
    },
    /// Nothing was staged: the tail, given back, goes to rows.
    Rows(Vec<(i64, Vec<u8>)>),
}

/// The ciphertext files of one database (see the module documentation).
#[derive(Debug, Clone)]
pub struct PackFiles {
    dir: PathBuf,
    /// Full chunks are staged with direct writes where the file system
    /// takes them ([`direct`]).
    direct: Arc<direct::Direct>,
    /// Staging files kept open between an upload's chunks ([`kept`]).
    kept: Arc<kept::Kept>,
    /// The folder itself, open for the daemon's life: synced after each
    /// rename or removal in it without opening it each time.
    folder: Arc<File>,
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StoreError::Unavailable("a ciphertext file task failed".into()))?
        .map_err(StoreError::from)
}

/// Upload ids are the daemon's own (hex); anything but letters, digits,
/// `-` and `_` is refused before it can name a path (no `.`, no `/`), and
/// so is the staging folder's own name.
fn checked(upload_id: &str) -> Result<&str> {
    if !upload_id.is_empty()
        && upload_id.len() <= 64
        && upload_id != STAGING
        && upload_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(upload_id)
    } else {
        Err(StoreError::Corrupt(format!(
            "an upload id that cannot name a file: {upload_id:?}"
        )))
    }
}

/// Chunks in a file of `len` bytes.
fn chunks_of(len: u64) -> i64 {
    i64::try_from(len.div_ceil(CHUNK_BYTES as u64)).unwrap_or(i64::MAX)
}

/// Syncs a folder, so a rename or removal in it is on stable storage.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Refuses a chunk at `offset` of a staging file unless the file holds
/// exactly the chunks before it (they come in order).
fn in_order(file: &File, offset: u64) -> std::io::Result<()> {
    if file.metadata()?.len() == offset {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "a chunk at byte {offset} staged out of order"
        )))
    }
}

/// Starts writing `len` bytes at `offset` of `file` back to disk without
/// waiting (`posix_fadvise(POSIX_FADV_DONTNEED)` on dirty pages: Linux
/// starts their writeback but cannot drop them yet; [`drop_cached`] does
/// once the file is synced). A large pack's bytes go to disk as they
/// arrive, so its `fsync` at the end has little left to wait for. Only a
/// hint: durability still comes from that `fsync`.
fn write_back(file: &File, offset: u64, len: usize) {
    dont_need(file, offset, u64::try_from(len).ok());
}

/// Drops a synced file's pages from the page cache (all clean after its
/// `fsync`, so `POSIX_FADV_DONTNEED` frees them at once). A pack is read
/// once, often days later (a receiver pulling at once pays a disk read),
/// and the next upload's writes reuse the freed pages: without this the
/// cache grows by every pack received and each write lands on memory the
/// machine has not touched for a while, which on a virtual machine that
/// hands free memory back to its host costs a fault to the host a page
/// (BENCHMARKS.md, round 13: a third of the daemon's CPU for 10 MB packs
/// on the benchmark machine). Only a hint.
fn drop_cached(file: &File) {
    dont_need(file, 0, None);
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` over `len` bytes of `file` from
/// `offset` (to its end when `len` is `None` or 0). A hint whose failure
/// costs nothing but what it would have saved.
fn dont_need(file: &File, offset: u64, len: Option<u64>) {
    use rustix::fs::{Advice, fadvise};
    let len = len.and_then(std::num::NonZeroU64::new);
    let _ = fadvise(file, offset, len, Advice::DontNeed);
}

impl PackFiles {
    /// The folder of `database`'s files: `DB-ciphertext` beside it
    /// (`baton.db-ciphertext`).
    pub fn folder_for(database: &Path) -> PathBuf {
        let mut name = database
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_else(|| "baton.db".into());
        name.push(SUFFIX);
        database.with_file_name(name)
    }

    /// The files beside `database` (see [`Self::folder_for`]), creating the
    /// folders owner-only if needed.
    pub fn beside(database: &Path) -> Result<Self> {
        let dir = Self::folder_for(database);
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = dir.join(STAGING);
        if !staging.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&staging)?;
            sync_dir(&dir)?;
            sync_dir(&parent)?;
        }
        Ok(Self {
            folder: Arc::new(File::open(&dir)?),
            dir,
            direct: Arc::new(direct::Direct::new(CHUNK_BYTES)),
            kept: Arc::default(),
        })
    }

    fn staged(&self, upload_id: &str) -> PathBuf {
        self.dir.join(STAGING).join(upload_id)
    }

    fn held(&self, upload_id: &str) -> PathBuf {
        self.dir.join(upload_id)
    }

    /// Appends chunk `idx` of an upload to its staging file (chunks come in
    /// order, each but the last [`CHUNK_BYTES`] long): a whole chunk with a
    /// direct write where it can ([`direct`]), otherwise through the page
    /// cache, its write-back started at once. The file stays open for the
    /// next chunk ([`kept`]).
    pub async fn stage(&self, upload_id: &str, idx: i64, data: bytes::Bytes) -> Result<()> {
        let id = checked(upload_id)?.to_string();
        let path = self.staged(&id);
        let offset = u64::try_from(idx).unwrap_or(u64::MAX) * CHUNK_BYTES as u64;
        let (direct, kept) = (Arc::clone(&self.direct), Arc::clone(&self.kept));
        blocking(move || {
            let first = idx == 0;
            let kept_file = if first { None } else { kept.take(&id) };
            let mut staging = match kept_file {
                Some(staging) => staging,
                None => direct.open(&path, first)?,
            };
            in_order(&staging.file, offset)?;
            if !direct.write(&mut staging, &path, offset, &data)? {
                direct::buffered(&mut staging, offset, &data)?;
                write_back(&staging.file, offset, data.len());
            }
            kept.keep(id, staging);
            Ok(())
        })
        .await
    }

    /// Makes an upload's staged file durable and puts it in place, with the
    /// `tail` chunks appended. An upload that staged nothing (a small
    /// pack) gets its tail back, for rows.
    pub async fn seal(&self, upload_id: &str, tail: Vec<(i64, Vec<u8>)>) -> Result<Sealed> {
        let id = checked(upload_id)?;
        let (staged, held, folder) = (self.staged(id), self.held(id), Arc::clone(&self.folder));
        let kept = self.kept.take(id);
        blocking(move || {
            let opened = match kept {
                Some(staging) => Ok(staging),
                None => OpenOptions::new()
                    .write(true)
                    .open(&staged)
                    .map(|file| kept::Staging {
                        file,
                        direct: false,
                    }),
            };
            let mut staging = match opened {
                Ok(staging) => staging,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return match std::fs::metadata(&held) {
                        Ok(meta) if tail.is_empty() => Ok(Sealed::InFile {
                            chunks: chunks_of(meta.len()),
                            bytes: meta.len(),
                        }),
                        Ok(_) => Err(std::io::Error::other("a tail for a sealed upload")),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Ok(Sealed::Rows(tail))
                        }
                        Err(e) => Err(e),
                    };
                }
                Err(e) => return Err(e),
            };
            let mut bytes = staging.file.metadata()?.len();
            if !tail.is_empty() && !bytes.is_multiple_of(CHUNK_BYTES as u64) {
                return Err(std::io::Error::other(
                    "a tail after a staged chunk that is not full",
                ));
            }
            for (_, data) in &tail {
                direct::buffered(&mut staging, bytes, data)?;
                bytes += data.len() as u64;
            }
            let file = staging.file;
            file.sync_all()?;
            drop_cached(&file);
            drop(file);
            std::fs::rename(&staged, &held)?;
            folder.sync_all()?;
            Ok(Sealed::InFile {
                chunks: chunks_of(bytes),
                bytes,
            })
        })
        .await
    }

    /// Puts a sealed upload's file back in staging (its commit found the
    /// directory moved on: it is invisible until committed again).
    pub async fn unseal(&self, upload_id: &str) -> Result<()> {
        let id = checked(upload_id)?;
        let (staged, held, dir) = (self.staged(id), self.held(id), self.dir.clone());
        blocking(move || {
            // Waits for a backup copying the folder, as a removal would not.
            let lock = lock_file(&dir)?;
            lock.lock_shared()?;
            std::fs::rename(&held, &staged)
        })
        .await
    }

    /// Chunk `idx` of a held file; `None` when the upload has no file (its
    /// chunks are rows).
    pub async fn read(&self, upload_id: &str, idx: i64) -> Result<Option<Vec<u8>>> {
        let path = self.held(checked(upload_id)?);
        let offset = u64::try_from(idx).unwrap_or(u64::MAX) * CHUNK_BYTES as u64;
        blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if offset >= len {
                return Err(std::io::Error::other(format!(
                    "chunk {idx} is past the end of the file"
                )));
            }
            let take = usize::try_from((len - offset).min(CHUNK_BYTES as u64)).unwrap_or(0);
            let mut data = vec![0u8; take];
            file.read_exact_at(&mut data, offset)?;
            Ok(Some(data))
        })
        .await
    }

    /// Removes an upload's staged file (an upload that will not be stored).
    pub async fn remove_staged(&self, upload_id: &str) -> Result<()> {
        let id = checked(upload_id)?;
        self.kept.forget(id);
        let staged = self.staged(id);
        blocking(move || remove_quietly(&staged)).await
    }

    /// Whether an upload's file is in place (sealed).
    pub async fn is_held(&self, upload_id: &str) -> Result<bool> {
        let held = self.held(checked(upload_id)?);
        blocking(move || Ok(held.exists())).await
    }

    /// Removes an upload's staged file and held file (a pack whose
    /// ciphertext is deleted, or an upload known not to be stored). The
    /// held file is overwritten with zeros first. Left for the next sweep
    /// while a backup copies (see the module documentation).
    pub async fn remove(&self, upload_id: &str) -> Result<()> {
        let id = checked(upload_id)?;
        self.kept.forget(id);
        let (staged, held, dir) = (self.staged(id), self.held(id), self.dir.clone());
        let folder = Arc::clone(&self.folder);
        blocking(move || {
            remove_quietly(&staged)?;
            let Some(_lock) = try_lock_shared(&dir)? else {
                return Ok(());
            };
            erase(&held)?;
            folder.sync_all()
        })
        .await
    }

    /// Removes every staged file (on start: nothing is in flight); how
    /// many chunks they held.
    pub async fn clear_staging(&self) -> Result<u64> {
        self.kept.clear();
        let staging = self.dir.join(STAGING);
        blocking(move || {
            let mut n = 0;
            for entry in std::fs::read_dir(&staging)? {
                let entry = entry?;
                n += u64::try_from(chunks_of(entry.metadata()?.len())).unwrap_or(0);
                remove_quietly(&entry.path())?;
            }
            Ok(n)
        })
        .await
    }

    /// The upload ids of the held files.
    pub async fn held_ids(&self) -> Result<Vec<String>> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                if let Some(name) = entry.file_name().to_str()
                    && checked(name).is_ok()
                {
                    ids.push(name.to_string());
                }
            }
            Ok(ids)
        })
        .await
    }

    /// Removes the held files of `ids`; how many.
    pub async fn remove_each(&self, ids: impl IntoIterator<Item = String>) -> Result<u64> {
        let mut n = 0;
        for id in ids {
            self.remove(&id).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Copies every held file into `to` (created), holding the lock
    /// exclusively while `during` runs and the files are copied, so no
    /// file is removed in between; returns `during`'s answer and the count.
    pub async fn copy_while<T>(
        &self,
        to: &Path,
        during: impl Future<Output = Result<T>>,
    ) -> Result<(T, u64)> {
        let dir = self.dir.clone();
        let lock = blocking(move || {
            let file = lock_file(&dir)?;
            file.lock()?;
            Ok(file)
        })
        .await?;
        let answer = during.await?;
        let (from, to) = (self.dir.clone(), to.to_path_buf());
        let copied = blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(to.join(STAGING))?;
            let mut n = 0;
            for entry in std::fs::read_dir(&from)? {
                let entry = entry?;
                let name = entry.file_name();
                if entry.file_type()?.is_file() && name.to_str().is_some_and(|n| checked(n).is_ok())
                {
                    match std::fs::copy(entry.path(), to.join(&name)) {
                        Ok(_) => {
                            File::open(to.join(&name))?.sync_all()?;
                            n += 1;
                        }
                        // Gone since the listing: never a committed pack's.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            File::open(&to)?.sync_all()?;
            drop(lock);
            Ok(n)
        })
        .await?;
        Ok((answer, copied))
    }
}

/// The lock file of a ciphertext folder.
fn lock_file(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK))
}

/// The lock taken shared, or `None` while a backup holds it.
fn try_lock_shared(dir: &Path) -> std::io::Result<Option<File>> {
    let file = lock_file(dir)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Removes a file if it is there.
fn remove_quietly(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Overwrites a file with zeros, syncs it and removes it, if it is there.
fn erase(path: &Path) -> std::io::Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut at = 0;
    while at < len {
        let n = usize::try_from((len - at).min(CHUNK_BYTES as u64)).unwrap_or(0);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()?;
    drop(file);
    remove_quietly(path)
}

#[cfg(test)]
mod tests;
