//! Issue 21 item 3: a backup that restores. Taken while the daemon serves
//! and a school keeps sending, restored into the daemon's data directory:
//! the daemon serves the same trust, the audit log verifies, and every pack
//! confirmed before the backup began is there and downloads whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use baton::api::v1;
use sha2::Digest as _;

use crate::client_lifecycle::stderr;
use crate::common::{Daemon, ciphertext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue21_a_backup_under_load_restores() {
    let mut daemon = Daemon::start_sqlite(&[]).await;
    let sender = Arc::new(daemon.enrol("8612001").await);
    let receiver = daemon.enrol("8614001").await;
    let keys = Arc::new(sender.keys_of(&receiver.laestab).await);
    let to = receiver.laestab;
    // A school sending throughout; each entry is (header, sha, confirmed at).
    let stop = Arc::new(AtomicBool::new(false));
    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let sending = {
        let (sender, keys, stop) = (Arc::clone(&sender), Arc::clone(&keys), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let data = ciphertext(100_000);
                let header = v1::PackHeader::from(&sender.header_for(&to, &keys, &data));
                if sender.upload(&header, &data, 64 * 1024).await.is_ok() {
                    count_tx.send_modify(|n| *n += 1);
                    confirmed.push((
                        header.pack_id.clone(),
                        sha2::Sha256::digest(&data).to_vec(),
                        std::time::Instant::now(),
                    ));
                }
            }
            confirmed
        })
    };
    // Some packs before the backup begins, then the backup mid-stream.
    count.wait_for(|n| *n >= 5).await.unwrap();
    let began = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let out = daemon
        .admin(&["admin", "backup", backup.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact"));
    stop.store(true, Ordering::Relaxed);
    let confirmed = sending.await.unwrap();
    let before: Vec<_> = confirmed.iter().filter(|(_, _, at)| *at < began).collect();
    assert!(
        !before.is_empty(),
        "no pack was confirmed before the backup began"
    );
    assert!(backup.join("tls/ca.pem").exists() && backup.join("audit-signing.key").exists());
    // A second backup into the same folder is refused, naming it.
    let again = daemon
        .admin(&["admin", "backup", backup.to_str().unwrap()])
        .await;
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    // The day the disk dies: the data directory replaced by the backup.
    daemon.kill9().await;
    std::fs::remove_dir_all(&daemon.data).unwrap();
    std::fs::rename(&backup, &daemon.data).unwrap();
    daemon.restart(&[]).await;
    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
    for (id, sha, _) in before {
        let (_, got) = receiver.download(id).await.unwrap();
        assert_eq!(
            &sha2::Sha256::digest(&got).to_vec(),
            sha,
            "pack {id} changed"
        );
    }
}

/// `batond admin check` on a restored copy: the audit chain and every held
/// pack's ciphertext against its SHA-256; a damaged chunk is named. On
/// SQLite the copy is `admin backup`'s; on PostgreSQL, `pg_dump` restored
/// with `pg_restore` into a new database (as docs/operations.md says),
/// beside `admin backup`'s copy of the TLS files and audit key.
async fn issue21_a_restore_is_checked(daemon: Daemon) {
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let keys = a.keys_of(&b.laestab).await;
    for _ in 0..4 {
        let data = ciphertext(150_000);
        let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        a.upload(&header, &data, 64 * 1024).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let out = daemon
        .admin(&["admin", "backup", backup.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(backup.join("tls/ca.pem").exists() && backup.join("audit-signing.key").exists());
    let check = |args: Vec<String>| async move {
        crate::common::batond()
            .args(args)
            .args(["admin", "check"])
            .output()
            .await
            .unwrap()
    };
    let mut keep = None;
    let (args, damage): (Vec<String>, Box<dyn FnOnce() -> _>) = match &daemon.database_url {
        None => {
            let db = backup.join("baton.db");
            let args = vec!["--data-dir".to_string(), backup.display().to_string()];
            let damage = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
                Box::pin(async move {
                    let pool = crate::common::open_db(&db).await;
                    sqlx::query("UPDATE pack_chunks SET data = X'00' WHERE rowid = (SELECT MIN(rowid) FROM pack_chunks)")
                        .execute(&pool)
                        .await
                        .unwrap();
                    pool.close().await;
                })
            };
            (args, Box::new(damage))
        }
        Some(url) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(stdout.contains("pg_dump"), "{stdout}");
            let dump = backup.join("baton.dump");
            let dumped = tokio::process::Command::new("pg_dump")
                .args(["-Fc", "-f", dump.to_str().unwrap(), url])
                .output()
                .await
                .unwrap();
            assert!(dumped.status.success(), "{}", stderr(&dumped));
            let server = crate::common::pgdb::server_url().unwrap();
            let restored = Arc::new(crate::common::pgdb::TestDb::create(&server).await);
            let done = tokio::process::Command::new("pg_restore")
                .args(["--no-owner", "-d", &restored.url, dump.to_str().unwrap()])
                .output()
                .await
                .unwrap();
            assert!(done.status.success(), "{}", stderr(&done));
            keep = Some(Arc::clone(&restored));
            let args = vec![
                "--data-dir".to_string(),
                backup.display().to_string(),
                "--database-url".to_string(),
                restored.url.clone(),
            ];
            let damage = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
                Box::pin(async move {
                    use sqlx::Connection as _;
                    let mut conn = sqlx::PgConnection::connect(&restored.url).await.unwrap();
                    sqlx::query("UPDATE pack_chunks SET data = '\\x00' WHERE ctid = (SELECT ctid FROM pack_chunks LIMIT 1)")
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    let _ = conn.close().await;
                })
            };
            (args, Box::new(damage))
        }
    };
    let ok = check(args.clone()).await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    let said = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(said.contains("4 packs held and whole"), "{said}");
    assert!(said.contains("audit log intact"), "{said}");
    damage().await;
    let bad = check(args).await;
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("1 packs' ciphertext is missing or altered: 8612001 -> 8614001"),
        "{err}"
    );
    drop(keep);
}

on_both_backends!(issue21_a_restore_is_checked);
