//! Issue 22 item 2: on SQLite a pack of a chunk or more is kept in a
//! ciphertext file beside the database (`baton.db-ciphertext/UPLOAD_ID`), synced and
//! in place before its row commits. Small packs stay rows. Downloads read
//! the files; retries store nothing twice; the start-up rule removes what a
//! crash left (staged files, files no held pack names); a backup carries
//! the files and `admin check` verifies them; a purge zeroes and removes
//! them.

use baton::api::v1;

use crate::client_lifecycle::stderr;
use crate::common::reliability::byte_hits;
use crate::common::{Daemon, ciphertext, ciphertext_files, open_db};

const CHUNK: usize = 256 * 1024;

/// (chunks the row says, chunk rows stored) for a pack.
async fn chunk_counts(daemon: &Daemon, id: &str) -> (i64, i64) {
    let pool = open_db(&daemon.db_path()).await;
    let counts = sqlx::query_as(
        "SELECT p.chunks, (SELECT COUNT(*) FROM pack_chunks c WHERE c.upload_id = p.upload_id) \
         FROM packs p WHERE p.pack_id = ?",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    counts
}

#[tokio::test]
async fn issue22_large_packs_are_files_that_recover_back_up_and_purge() {
    let mut daemon = Daemon::start_sqlite(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let keys = a.keys_of(&b.laestab).await;
    // Four chunks and a bit, exactly one chunk, and a small pack.
    let mut sent = Vec::new();
    for len in [4 * CHUNK + 1000, CHUNK, 20_000] {
        let data = ciphertext(len);
        let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        let stored = a.upload(&header, &data, 64 * 1024).await.unwrap();
        assert!(!stored.already_stored);
        sent.push((header, data));
    }
    assert_eq!(ciphertext_files(&daemon.data), (0, 2), "two packs in files");
    assert_eq!(chunk_counts(&daemon, &sent[0].0.pack_id).await, (5, 0));
    assert_eq!(chunk_counts(&daemon, &sent[1].0.pack_id).await, (1, 0));
    assert_eq!(chunk_counts(&daemon, &sent[2].0.pack_id).await, (1, 1));
    for (header, data) in &sent {
        let (_, got) = b.download(&header.pack_id).await.unwrap();
        assert!(got == *data, "pack {} changed", header.pack_id);
    }
    // A retry stores nothing twice and leaves no file behind.
    let (header, data) = &sent[0];
    assert!(
        a.upload(header, data, 64 * 1024)
            .await
            .unwrap()
            .already_stored
    );
    assert_eq!(ciphertext_files(&daemon.data), (0, 2));

    // What a crash leaves: a staged file, and a file put in place whose row
    // never committed. The start-up rule removes both and nothing else.
    let dir = daemon.data.join("baton.db-ciphertext");
    std::fs::write(dir.join("staging/00aa"), b"half an upload").unwrap();
    std::fs::write(dir.join("00bb"), b"renamed, never committed").unwrap();
    daemon.kill9().await;
    daemon.restart(&[]).await;
    assert_eq!(ciphertext_files(&daemon.data), (0, 2), "leftovers removed");
    for (header, data) in &sent {
        let (_, got) = b.download(&header.pack_id).await.unwrap();
        assert!(
            got == *data,
            "pack {} changed by the restart",
            header.pack_id
        );
    }

    // A backup carries the files; `admin check` re-hashes them, and names a
    // damaged one.
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup");
    let out = daemon
        .admin(&["admin", "backup", backup.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ciphertext_files(&backup),
        (0, 2),
        "the files are in the copy"
    );
    let check = || async {
        crate::common::batond()
            .arg("--data-dir")
            .arg(&backup)
            .args(["admin", "check"])
            .output()
            .await
            .unwrap()
    };
    let out = check().await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 packs held and whole"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let copied = std::fs::read_dir(backup.join("baton.db-ciphertext"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .unwrap()
        .path();
    let mut damaged = std::fs::read(&copied).unwrap();
    damaged[100] ^= 1;
    std::fs::write(&copied, damaged).unwrap();
    let out = check().await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1 packs' ciphertext is missing or altered"));

    // Purged: the files are overwritten and removed; no piece of them is
    // left anywhere in the data directory.
    let needles: Vec<Vec<u8>> = sent[..2]
        .iter()
        .flat_map(|(_, data)| [data[..48].to_vec(), data[data.len() - 48..].to_vec()])
        .collect();
    assert!(!byte_hits(&[&daemon.data], &needles).1.is_empty());
    let out = daemon.purge_now(&[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ciphertext_files(&daemon.data), (0, 0));
    let (scanned, hits) = byte_hits(&[&daemon.data], &needles);
    assert!(scanned.files >= 2);
    assert!(hits.is_empty(), "purged ciphertext is still in {hits:?}");
    let gone = b.download(&sent[0].0.pack_id).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
}

/// A pack purged while it downloads, its file kept meanwhile (a backup
/// holds the folder's lock): the stream ends with `NotFound` instead of
/// the rest of the pack, because a pack streaming in several chunks has
/// its row read again while it streams (every 250 ms, and always after its
/// last chunk is read, so a withdrawn pack never ends whole). The file
/// goes at the next purge sweep.
#[tokio::test]
async fn issue22_a_file_backed_pack_withdrawn_mid_download_stops_streaming() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let keys = a.keys_of(&b.laestab).await;
    // Larger than what HTTP/2 windows and socket buffers hold unread.
    const CHUNKS: usize = 64;
    let data = ciphertext(CHUNKS * CHUNK);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    a.upload(&header, &data, CHUNK).await.unwrap();

    let mut stream = b
        .exchange()
        .download(b.req(v1::DownloadRequest {
            pack_id: header.pack_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    // The header and the first chunk arrive.
    for _ in 0..2 {
        stream.message().await.unwrap().unwrap();
    }
    // A backup holds the lock, so the purge cannot remove the file.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(daemon.data.join("baton.db-ciphertext/.lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = daemon.purge_now(&[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ciphertext_files(&daemon.data), (0, 1), "the file waits");
    let mut chunks = 1;
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => chunks += 1,
            Ok(None) => panic!("the whole purged pack was streamed ({chunks} chunks)"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::NotFound, "{ended:?}");
    assert!(ended.message().contains("purged"), "{ended:?}");
    assert!(chunks < CHUNKS, "{chunks} of {CHUNKS} chunks streamed");
    // The lock released, the next purge sweep removes the file.
    drop(lock);
    let data2 = ciphertext(1000);
    let h2 = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data2));
    a.upload(&h2, &data2, CHUNK).await.unwrap();
    let out = daemon.purge_now(&[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ciphertext_files(&daemon.data), (0, 0));
}
