//! Issue 16 item 4: whoever owns the database can rewrite the audit log and
//! recompute its hash chain (so `audit verify` alone passes), or cut its
//! newest entries off; the signed checkpoints the daemon handed out catch
//! both, at the data protection officer's desk (`audit verify
//! --checkpoint`) and at the school's (`baton send` / `ack`).

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::common::cli::{self, Home, enrol};
use crate::common::{Daemon, open_db};

type Row = (i64, i64, String, String, String);

/// Recomputes the whole chain from the first entry, as the database's
/// owner would after rewriting one.
async fn rechain(db: &sqlx::SqlitePool) {
    let rows: Vec<Row> =
        sqlx::query_as("SELECT seq, at_ms, actor, action, subject FROM audit ORDER BY seq")
            .fetch_all(db)
            .await
            .unwrap();
    let mut prev = vec![0u8; 32];
    for (seq, at, actor, action, subject) in rows {
        let mut bytes = b"baton-audit-v1".to_vec();
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&at.to_be_bytes());
        for field in [
            actor.as_bytes(),
            action.as_bytes(),
            subject.as_bytes(),
            &prev,
        ] {
            bytes.extend_from_slice(&(field.len() as u64).to_be_bytes());
            bytes.extend_from_slice(field);
        }
        let hash = Sha256::digest(&bytes).to_vec();
        sqlx::query("UPDATE audit SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(db)
            .await
            .unwrap();
        prev = hash;
    }
}

async fn send(home: &Home, root: &Path, first: u32, n: u32) -> std::process::Output {
    let records: Vec<_> = (first..first + n).map(|i| cli::pupil("Audit", i)).collect();
    cli::send_records(home, root, "8614001", &records).await
}

fn sent(out: std::process::Output) {
    assert!(out.status.success(), "{}", said(&out));
}

/// The school's kept checkpoint, written where the DPO can read it.
async fn kept(home: &Home, root: &Path, name: &str) -> (String, u64) {
    let text = home.ok(&["checkpoint"]).await;
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let path = root.join(name);
    std::fs::write(&path, &text).unwrap();
    (
        path.display().to_string(),
        value["entries"].as_u64().unwrap(),
    )
}

async fn verify(daemon: &Daemon, checkpoint: Option<&str>) -> std::process::Output {
    let mut args = vec!["admin", "audit", "verify"];
    if let Some(c) = checkpoint {
        args.extend(["--checkpoint", c]);
    }
    daemon.admin(&args).await
}

fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn issue16_a_rewritten_audit_log_fails_against_a_signed_checkpoint() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    sent(send(&primary, root.path(), 1, 3).await);
    let (file, entries) = kept(&primary, root.path(), "school.json").await;
    let ok = verify(&daemon, Some(&file)).await;
    assert!(ok.status.success(), "{}", said(&ok));
    assert!(
        said(&ok).contains("matches 1 signed checkpoint"),
        "{}",
        said(&ok)
    );

    // The operator's own checkpoint, from an export, also holds.
    let exported = root.path().join("export.json");
    let out = daemon
        .admin(&[
            "admin",
            "audit",
            "export",
            "--checkpoint",
            exported.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(verify(&daemon, exported.to_str()).await.status.success());

    // The database's owner rewrites who did an early upload, then
    // recomputes the whole chain: the chain alone still verifies.
    let db = open_db(&daemon.db_path()).await;
    sqlx::query(
        "UPDATE audit SET subject = 'nothing to see' WHERE seq = \
         (SELECT MIN(seq) FROM audit WHERE action = 'pack.upload')",
    )
    .execute(&db)
    .await
    .unwrap();
    rechain(&db).await;
    let chain_only = verify(&daemon, None).await;
    assert!(chain_only.status.success(), "{}", said(&chain_only));
    let caught = verify(&daemon, Some(&file)).await;
    assert!(!caught.status.success());
    let text = said(&caught);
    assert!(text.contains(&format!("audit entry {entries}")), "{text}");
    assert!(text.contains("rewritten"), "{text}");

    // A checkpoint edited by hand does not verify at all.
    let forged = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&format!("\"entries\": {entries}"), "\"entries\": 1");
    let forged_file = root.path().join("forged.json");
    std::fs::write(&forged_file, forged).unwrap();
    let out = verify(&daemon, forged_file.to_str()).await;
    assert!(!out.status.success());
    assert!(said(&out).contains("does not verify"), "{}", said(&out));
}

#[tokio::test]
async fn issue16_a_truncated_audit_log_is_caught_by_the_dpo_and_the_school() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    sent(send(&primary, root.path(), 1, 12).await);
    let (file, entries) = kept(&primary, root.path(), "school.json").await;
    assert!(entries > 12, "{entries}");

    // The newest ten entries are cut off: the chain that is left verifies.
    let db = open_db(&daemon.db_path()).await;
    sqlx::query("DELETE FROM audit WHERE seq > $1")
        .bind(entries as i64 - 10)
        .execute(&db)
        .await
        .unwrap();
    assert!(verify(&daemon, None).await.status.success());
    let caught = verify(&daemon, Some(&file)).await;
    assert!(!caught.status.success());
    assert!(said(&caught).contains("truncated"), "{}", said(&caught));

    // The school's next send is answered with a checkpoint of a shorter
    // log than the one it kept.
    let out = send(&primary, root.path(), 100, 1).await;
    assert!(!out.status.success());
    let text = said(&out);
    assert!(text.contains("went backwards"), "{text}");
    assert!(text.contains("data protection officer"), "{text}");
    // The kept checkpoint is not replaced by the shorter one.
    let (_, still) = kept(&primary, root.path(), "again.json").await;
    assert_eq!(still, entries);
}
