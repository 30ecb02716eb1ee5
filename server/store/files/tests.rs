//! Tests of the ciphertext files: staging, sealing, reading, removal,
//! the page cache, direct writes and the backup lock.

use std::path::Path;

use super::*;

/// A temporary folder beside the test binary (under `target/`), not in the
/// temporary directory: a tmpfs there keeps its pages whatever it is told
/// and may take direct I/O without doing it. `None` (said) if that is a
/// tmpfs too.
pub(super) fn dir_on_disk() -> Option<tempfile::TempDir> {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let fs = rustix::fs::statfs(dir.path()).unwrap();
    if u64::try_from(fs.f_type).unwrap_or(0) == TMPFS_MAGIC {
        eprintln!(
            "skipped: {} is on a tmpfs, which keeps its pages",
            dir.path().display()
        );
        return None;
    }
    Some(dir)
}

/// Bytes of `path` in the page cache, as `fincore` (util-linux-extra)
/// counts them.
pub(super) fn resident(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux-extra)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Seals upload `id`, `whole` chunks staged, with a tail of ten bytes of
/// `fill`, and checks what the seal says is in the file.
async fn seal_after(files: &PackFiles, id: &str, whole: i64, fill: u8) {
    let sealed = files.seal(id, vec![(whole, vec![fill; 10])]).await.unwrap();
    let bytes = u64::try_from(whole).unwrap() * CHUNK_BYTES as u64 + 10;
    assert_eq!(
        sealed,
        Sealed::InFile {
            chunks: whole + 1,
            bytes
        }
    );
}

#[tokio::test]
async fn a_sealed_file_reads_back_by_chunk_and_staging_is_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let files = PackFiles::beside(&dir.path().join("baton.db")).unwrap();
    let id = "00ff";
    let big = vec![7u8; CHUNK_BYTES];
    files.stage(id, 0, big.clone().into()).await.unwrap();
    // Out of order is refused.
    assert!(files.stage(id, 2, big.clone().into()).await.is_err());
    assert_eq!(files.read(id, 0).await.unwrap(), None, "not visible staged");
    let chunks = files.seal(id, vec![(1, vec![9u8; 10])]).await.unwrap();
    let sealed = Sealed::InFile {
        chunks: 2,
        bytes: CHUNK_BYTES as u64 + 10,
    };
    assert_eq!(chunks, sealed);
    assert_eq!(files.read(id, 0).await.unwrap(), Some(big));
    assert_eq!(files.read(id, 1).await.unwrap(), Some(vec![9u8; 10]));
    assert!(files.read(id, 2).await.is_err());
    // Sealed again: the file is in place.
    assert_eq!(files.seal(id, Vec::new()).await.unwrap(), sealed);
    // The directory moved on: staged again, invisible, then sealed.
    files.unseal(id).await.unwrap();
    assert_eq!(files.read(id, 0).await.unwrap(), None);
    assert_eq!(files.seal(id, Vec::new()).await.unwrap(), sealed);
    assert!(files.seal("staging", Vec::new()).await.is_err());
    // A tail after a partial chunk would misplace every later chunk.
    files.stage("0b", 0, vec![1, 2, 3].into()).await.unwrap();
    assert!(files.seal("0b", vec![(1, vec![4])]).await.is_err());
    files.remove("0b").await.unwrap();
    let small = vec![(0, vec![1u8; 5])];
    assert_eq!(
        files.seal("abcd", small.clone()).await.unwrap(),
        Sealed::Rows(small),
        "nothing staged: the tail comes back"
    );
    assert!(files.seal("../x", Vec::new()).await.is_err());

    files.stage("0a", 0, vec![1, 2, 3].into()).await.unwrap();
    assert_eq!(files.clear_staging().await.unwrap(), 1);
    assert_eq!(files.held_ids().await.unwrap(), vec![id.to_string()]);
    files.remove(id).await.unwrap();
    assert!(files.held_ids().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sealed_file_leaves_nothing_in_the_page_cache() {
    let Some(dir) = dir_on_disk() else { return };
    let files = PackFiles::beside(&dir.path().join("baton.db")).unwrap();
    let id = "0c";
    for idx in 0..4 {
        let chunk = vec![u8::try_from(idx).unwrap(); CHUNK_BYTES];
        files.stage(id, idx, chunk.into()).await.unwrap();
    }
    seal_after(&files, id, 4, 1).await;
    assert_eq!(
        resident(&files.held(id)),
        0,
        "a synced pack's pages dropped"
    );
    // What is read is cached again (so the count above could fail).
    assert_eq!(files.read(id, 4).await.unwrap(), Some(vec![1u8; 10]));
    assert_eq!(
        files.read(id, 1).await.unwrap(),
        Some(vec![1u8; CHUNK_BYTES])
    );
    assert!(resident(&files.held(id)) >= CHUNK_BYTES as u64);
}

#[tokio::test]
async fn whole_chunks_skip_the_page_cache_and_a_busy_pool_falls_back_to_it() {
    let Some(dir) = dir_on_disk() else { return };
    let files = PackFiles::beside(&dir.path().join("baton.db")).unwrap();
    let id = "0d";
    let chunk = |n: u8| bytes::Bytes::from(vec![n; CHUNK_BYTES]);
    files.stage(id, 0, chunk(1)).await.unwrap();
    assert_eq!(
        resident(&files.staged(id)),
        0,
        "a whole chunk written directly leaves no pages"
    );
    // Every buffer in use: the next chunk goes through the page cache.
    let held = files.direct.hold_all();
    files.stage(id, 1, chunk(2)).await.unwrap();
    let cached = resident(&files.staged(id));
    assert!(cached > 0, "written through the cache");
    drop(held);
    files.stage(id, 2, chunk(3)).await.unwrap();
    assert!(
        resident(&files.staged(id)) <= cached,
        "direct again once a buffer is free"
    );
    seal_after(&files, id, 3, 4).await;
    assert_eq!(resident(&files.held(id)), 0);
    for (idx, n) in [(0, 1u8), (1, 2), (2, 3)] {
        assert_eq!(
            files.read(id, idx).await.unwrap(),
            Some(vec![n; CHUNK_BYTES])
        );
    }
    assert_eq!(files.read(id, 3).await.unwrap(), Some(vec![4u8; 10]));
}

/// Descriptors this process holds open on files under `dir`.
fn open_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[tokio::test]
async fn a_staging_file_stays_open_between_chunks_and_never_outlives_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let files = PackFiles::beside(&dir.path().join("baton.db")).unwrap();
    let staging = files.dir.join(STAGING);
    let chunk = |n: u8| bytes::Bytes::from(vec![n; CHUNK_BYTES]);
    files.stage("0e", 0, chunk(1)).await.unwrap();
    assert_eq!((files.kept.len(), open_under(&staging)), (1, 1));
    files.stage("0e", 1, chunk(2)).await.unwrap();
    assert_eq!(open_under(&staging), 1, "still held open, and only once");
    // Removed (a discarded upload): closed, and a late chunk is refused,
    // not written to the removed file.
    files.remove_staged("0e").await.unwrap();
    assert_eq!((files.kept.len(), open_under(&staging)), (0, 0));
    let late = files.stage("0e", 2, chunk(3)).await.unwrap_err();
    assert!(late.to_string().contains("out of order"), "{late}");
    files.remove_staged("0e").await.unwrap();
    // The first chunk again empties the file even while it is kept.
    files.stage("0f", 0, chunk(4)).await.unwrap();
    files.stage("0f", 0, chunk(5)).await.unwrap();
    assert_eq!(open_under(&staging), 1);
    seal_after(&files, "0f", 1, 6).await;
    assert_eq!(
        (files.kept.len(), open_under(&staging)),
        (0, 0),
        "sealed: closed"
    );
    assert_eq!(
        files.read("0f", 0).await.unwrap(),
        Some(vec![5u8; CHUNK_BYTES])
    );
    // No more than KEPT stay open; the rest are opened again a chunk.
    let ids: Vec<String> = (0..kept::KEPT + 3).map(|i| format!("1{i:03}")).collect();
    for id in &ids {
        files.stage(id, 0, chunk(7)).await.unwrap();
    }
    assert_eq!(files.kept.len(), kept::KEPT);
    assert_eq!(open_under(&staging), kept::KEPT);
    for id in &ids {
        files.stage(id, 1, chunk(8)).await.unwrap();
    }
    for id in &ids[..2] {
        seal_after(&files, id, 2, 9).await;
        assert_eq!(
            files.read(id, 1).await.unwrap(),
            Some(vec![8u8; CHUNK_BYTES])
        );
    }
    // Staging cleared (on start): every kept file closed first.
    assert!(files.kept.len() > 0);
    files.clear_staging().await.unwrap();
    assert_eq!((files.kept.len(), open_under(&staging)), (0, 0));
}

#[tokio::test]
async fn a_backup_holding_the_lock_defers_removal() {
    let dir = tempfile::tempdir().unwrap();
    let files = PackFiles::beside(&dir.path().join("baton.db")).unwrap();
    files.stage("01", 0, vec![5u8; 100].into()).await.unwrap();
    files.seal("01", Vec::new()).await.unwrap();
    let held = lock_file(&files.dir).unwrap();
    held.lock().unwrap();
    files.remove("01").await.unwrap();
    assert_eq!(files.held_ids().await.unwrap(), vec!["01".to_string()]);
    drop(held);
    assert_eq!(
        files
            .remove_each(files.held_ids().await.unwrap())
            .await
            .unwrap(),
        1
    );
    assert!(files.held_ids().await.unwrap().is_empty());
}
