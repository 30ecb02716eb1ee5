//! Direct staging writes: a full chunk of a large pack goes to its staging
//! file with `O_DIRECT`, from one of a few reused, aligned buffers, instead
//! of through the page cache.
//!
//! Why: written through the page cache, every byte of a pack is copied into
//! pages the kernel must then allocate, track, write back (started early
//! by a hint a chunk) and drop once synced. A direct write copies the
//! chunk into a buffer already in the processor's cache and hands it to
//! the disk. On the benchmark machine (two cores, a disk faster than they
//! can ingest) the daemon's CPU for 10 MB packs fell by ~8 % and their
//! ingest rose by ~8 % (BENCHMARKS.md, round 16). On a disk slower than
//! the processor a direct write waits for the device where the page
//! cache would not: round 9 measured large-pack ingest lower with direct
//! writes on such a disk (not measured with the bounded buffers below).
//!
//! Durability is unchanged: the staging file is still synced (its size and
//! blocks, and the disk's own cache) before it is renamed into place.
//!
//! The page cache remains the fallback, chunk by chunk, and nothing is
//! lost by it: where the file system refuses direct I/O (once refused,
//! never tried again by this daemon), for a piece that is not a whole
//! chunk, and when all [`BUFFERS`] are in use. The last bounds the memory
//! direct writes hold (4 MiB), and on a slow disk, where direct writes
//! wait longest, sends more of the writes through the cache, which absorbs
//! them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::kept::Staging;

/// Alignment of a direct write's memory, offset and length: a multiple of
/// every logical block size Linux block devices use (512 or 4,096 bytes).
const ALIGN: usize = 4096;

/// Aligned buffers at most (each a chunk): the memory direct writes may
/// hold at once. A write that finds none free goes through the page cache.
pub(super) const BUFFERS: usize = 16;

/// Direct writes for one folder of files: whether its file system refused
/// them, and the spare buffers.
#[derive(Debug)]
pub(super) struct Direct {
    /// Chunk length the buffers hold (`CHUNK_BYTES`).
    chunk: usize,
    /// Set once the file system has refused a direct open or write.
    refused: AtomicBool,
    spare: Mutex<Spare>,
}

#[derive(Debug, Default)]
struct Spare {
    free: Vec<Vec<u8>>,
    /// Buffers made so far (free or in use), at most [`BUFFERS`].
    made: usize,
}

/// A buffer taken from [`Direct`], given back when dropped.
pub(super) struct Taken<'a> {
    direct: &'a Direct,
    buf: Vec<u8>,
}

impl Taken<'_> {
    /// The buffer's aligned window of `len` bytes.
    fn window(&mut self, len: usize) -> &mut [u8] {
        let skew = self.buf.as_ptr() as usize % ALIGN;
        let start = if skew == 0 { 0 } else { ALIGN - skew };
        &mut self.buf[start..start + len]
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut spare) = self.direct.spare.lock() {
            spare.free.push(buf);
        }
    }
}

/// Whether `e` is the file system refusing direct I/O (`EINVAL`: none, or
/// an alignment it does not accept; `EOPNOTSUPP`: some FUSE file systems).
fn refusal(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error()
        .is_some_and(|n| n == Errno::INVAL.raw_os_error() || n == Errno::OPNOTSUPP.raw_os_error())
}

impl Direct {
    /// Direct writes of chunks of `chunk` bytes (a multiple of 4 KiB).
    pub(super) fn new(chunk: usize) -> Self {
        Self {
            chunk,
            refused: AtomicBool::new(chunk == 0 || !chunk.is_multiple_of(ALIGN)),
            spare: Mutex::new(Spare::default()),
        }
    }

    /// A free buffer, made if fewer than [`BUFFERS`] exist; `None` when all
    /// are in use.
    fn take(&self) -> Option<Taken<'_>> {
        let mut spare = self.spare.lock().ok()?;
        let buf = match spare.free.pop() {
            Some(buf) => buf,
            None if spare.made < BUFFERS => {
                spare.made += 1;
                vec![0u8; self.chunk + ALIGN]
            }
            None => return None,
        };
        Some(Taken { direct: self, buf })
    }

    /// Opens the staging file at `path` (created, or emptied when
    /// `first`), owner-only, for direct writes unless the file system has
    /// refused them. A direct open that fails for any reason is tried
    /// again without: that open meets the same error (no space, no such
    /// folder) and says it, or not.
    pub(super) fn open(&self, path: &Path, first: bool) -> std::io::Result<Staging> {
        if !self.refused.load(Ordering::Relaxed) {
            match open(path, first, true) {
                Ok(file) => return Ok(Staging { file, direct: true }),
                Err(e) => self.refused_by(&e, path),
            }
        }
        Ok(Staging {
            file: open(path, first, false)?,
            direct: false,
        })
    }

    /// Writes `data`, a whole chunk, at `offset` of `staging` (opened at
    /// `path`), which must be exactly `offset` bytes long. `Ok(false)` when
    /// it was not written and should go through the page cache instead
    /// (see [`buffered`]).
    pub(super) fn write(
        &self,
        staging: &mut Staging,
        path: &Path,
        offset: u64,
        data: &[u8],
    ) -> std::io::Result<bool> {
        if self.refused.load(Ordering::Relaxed)
            || data.len() != self.chunk
            || !offset.is_multiple_of(ALIGN as u64)
        {
            return Ok(false);
        }
        let Some(mut taken) = self.take() else {
            return Ok(false);
        };
        // A file an earlier piece went to through the page cache.
        if !staging.direct {
            if let Err(e) = set_direct(&staging.file, true) {
                self.refused_by(&std::io::Error::from(e), path);
                return Ok(false);
            }
            staging.direct = true;
        }
        let window = taken.window(data.len());
        window.copy_from_slice(data);
        match staging.file.write_all_at(window, offset) {
            Ok(()) => Ok(true),
            // Failed before anything was written (the file is still
            // `offset` long): the page cache's path writes it, or meets
            // the same error and says it.
            Err(e) if staging.file.metadata()?.len() == offset => {
                self.refused_by(&e, path);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Turns direct writes off for good if `e` is the file system under
    /// `path` refusing them, saying so once.
    fn refused_by(&self, e: &std::io::Error, path: &Path) {
        if refusal(e) && !self.refused.swap(true, Ordering::Relaxed) {
            let folder = path.parent().unwrap_or(path);
            tracing::info!(
                folder = %folder.display(),
                error = %e,
                "the file system refuses direct writes: large packs are staged through the page cache"
            );
        }
    }

    /// Takes every free buffer and makes the rest, as a test's stand-in
    /// for uploads holding them all.
    #[cfg(test)]
    pub(super) fn hold_all(&self) -> Vec<Taken<'_>> {
        std::iter::from_fn(|| self.take()).collect()
    }
}

/// Opens a staging file, owner-only, with `O_DIRECT` when `direct`;
/// created if missing, and emptied when `first`.
fn open(path: &Path, first: bool, direct: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(first).mode(0o600);
    if direct {
        options.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
    }
    options.open(path)
}

/// Sets or clears `O_DIRECT` on an open file.
fn set_direct(file: &File, on: bool) -> rustix::io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    let flags = if on {
        flags.union(OFlags::DIRECT)
    } else {
        flags.difference(OFlags::DIRECT)
    };
    fcntl_setfl(file, flags)
}

/// Writes `data` at `offset` of `staging` through the page cache (clearing
/// `O_DIRECT` first if set: a piece that is not a whole chunk, or a chunk
/// that found no buffer, or a seal's tail).
pub(super) fn buffered(staging: &mut Staging, offset: u64, data: &[u8]) -> std::io::Result<()> {
    if staging.direct {
        set_direct(&staging.file, false)?;
        staging.direct = false;
    }
    staging.file.write_all_at(data, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the file system under `dir` takes direct I/O at all.
    fn takes_direct_io(dir: &Path) -> bool {
        match open(&dir.join("probe"), true, true) {
            Ok(_) => true,
            Err(e) if refusal(&e) => false,
            Err(e) => panic!("{e}"),
        }
    }

    /// A folder on disk whose file system takes direct I/O; `None` (said)
    /// if there is none.
    fn direct_dir() -> Option<tempfile::TempDir> {
        let dir = super::super::tests::dir_on_disk()?;
        if !takes_direct_io(dir.path()) {
            eprintln!("skipped: this file system refuses direct I/O");
            return None;
        }
        Some(dir)
    }

    /// Opens `path` as staging does, checks the order and writes `data`
    /// at `offset` directly where it can: whether it did.
    fn write(direct: &Direct, path: &Path, first: bool, offset: u64, data: &[u8]) -> bool {
        let mut staging = direct.open(path, first).unwrap();
        super::super::in_order(&staging.file, offset).unwrap();
        direct.write(&mut staging, path, offset, data).unwrap()
    }

    #[test]
    fn chunks_written_directly_read_back_in_order() {
        let Some(dir) = super::super::tests::dir_on_disk() else {
            return;
        };
        let direct = Direct::new(2 * ALIGN);
        let expect = takes_direct_io(dir.path());
        let path = dir.path().join("upload");
        let (a, b) = (vec![1u8; 2 * ALIGN], vec![2u8; 2 * ALIGN]);
        assert_eq!(write(&direct, &path, true, 0, &a), expect);
        if !expect {
            eprintln!("this file system refuses direct I/O: the page cache takes every chunk");
            assert!(direct.refused.load(Ordering::Relaxed));
            let staging = direct.open(&path, false).unwrap();
            assert!(!staging.direct, "not tried again");
            return;
        }
        assert!(write(&direct, &path, false, 2 * ALIGN as u64, &b));
        // Past the page cache: none of it is there.
        assert_eq!(super::super::tests::resident(&path), 0);
        // Not a whole chunk, or not at an aligned offset: the page cache's.
        let mut staging = direct.open(&path, false).unwrap();
        assert!(staging.direct);
        assert!(
            !direct
                .write(&mut staging, &path, 4 * ALIGN as u64, &b[1..])
                .unwrap()
        );
        assert!(!direct.write(&mut staging, &path, 1, &b).unwrap());
        assert!(!direct.refused.load(Ordering::Relaxed), "not a refusal");
        let mut written = a.clone();
        written.extend_from_slice(&b);
        assert_eq!(std::fs::read(&path).unwrap(), written);
        // Created owner-only; `first` empties a file written before.
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(write(&direct, &path, true, 0, &b));
        assert_eq!(std::fs::read(&path).unwrap(), b);
        // One buffer made, and kept for the next write.
        let spare = direct.spare.lock().unwrap();
        assert_eq!((spare.made, spare.free.len()), (1, 1));
    }

    #[test]
    fn a_piece_through_the_page_cache_and_a_chunk_directly_share_a_file() {
        let Some(dir) = direct_dir() else { return };
        let direct = Direct::new(ALIGN);
        let path = dir.path().join("upload");
        let mut staging = direct.open(&path, true).unwrap();
        buffered(&mut staging, 0, &[4u8; ALIGN]).unwrap();
        assert!(!staging.direct, "O_DIRECT cleared for the page cache");
        let cached = super::super::tests::resident(&path);
        assert!(cached > 0, "written through the cache");
        assert!(
            direct
                .write(&mut staging, &path, ALIGN as u64, &[5u8; ALIGN])
                .unwrap()
        );
        assert!(staging.direct, "O_DIRECT set again for a whole chunk");
        assert!(
            super::super::tests::resident(&path) <= cached,
            "the second chunk went past the cache"
        );
        let mut expect = vec![4u8; ALIGN];
        expect.extend_from_slice(&[5u8; ALIGN]);
        assert_eq!(std::fs::read(&path).unwrap(), expect);
    }

    #[test]
    fn with_every_buffer_in_use_a_chunk_goes_through_the_page_cache() {
        let Some(dir) = direct_dir() else { return };
        let direct = Direct::new(ALIGN);
        let held = direct.hold_all();
        assert_eq!(held.len(), BUFFERS, "no more than BUFFERS are made");
        let path = dir.path().join("upload");
        let chunk = vec![3u8; ALIGN];
        assert!(!write(&direct, &path, true, 0, &chunk));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "the caller writes it"
        );
        drop(held);
        assert!(write(&direct, &path, true, 0, &chunk));
        assert_eq!(std::fs::read(&path).unwrap(), chunk);
        assert_eq!(direct.spare.lock().unwrap().free.len(), BUFFERS);
    }

    #[test]
    fn a_chunk_the_kernel_cannot_align_is_never_tried() {
        let dir = tempfile::tempdir().unwrap();
        let direct = Direct::new(ALIGN + 1);
        let path = dir.path().join("upload");
        assert!(!write(&direct, &path, true, 0, &vec![0u8; ALIGN + 1]));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(
            !direct.open(&path, false).unwrap().direct,
            "never opened so"
        );
    }
}
