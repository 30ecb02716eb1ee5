//! The audit log: a whole journey is recorded and verifies; altering any
//! single stored entry makes `batond admin audit verify` fail naming it.
use crate::common;

use baton::api::v1;
use baton::crypto::{Draft, seal};
use baton::pack::{Kind, Manifest, PackId};
use common::Daemon;

type AuditRow = (i64, i64, String, String, String, Vec<u8>, Vec<u8>);

#[tokio::test]
async fn journey_verifies_and_any_alteration_is_named() {
    let daemon = Daemon::start(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;

    // A real sealed pack, from a to b.
    let keys = a.keys_of(&b.laestab).await;
    let draft = Draft {
        pack_id: PackId::new(),
        from: a.laestab,
        to: b.laestab,
        kind: Kind::Transfer,
        created_at_ms: 1,
        left_on: None,
        supersedes: None,
    };
    let mut manifest = Manifest {
        record: Default::default(),
        ctf_pupil_xml: None,
        attachments: vec![],
    };
    let (signed, sealed) = seal(
        &draft,
        &mut manifest,
        |_| Ok(std::io::empty()),
        &keys,
        &a.identity,
        Vec::new(),
    )
    .unwrap();
    let header = v1::PackHeader::from(&signed);
    a.upload(&header, &sealed, 64 * 1024).await.unwrap();
    b.exchange()
        .inbox(b.req(v1::InboxRequest::default()))
        .await
        .unwrap();
    let (_, got) = b.download(&header.pack_id).await.unwrap();
    // The download is recorded (and audited) once the receiver confirms it.
    b.exchange()
        .confirm_download(b.req(v1::ConfirmDownloadRequest {
            pack_id: header.pack_id.clone(),
            ciphertext_sha256: header.ciphertext_sha256.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(got, sealed);
    let ack = v1::AcknowledgeRequest {
        receipt: Some(b.receipt(&header)),
    };
    b.exchange().acknowledge(b.req(ack)).await.unwrap();
    let out = daemon
        .admin(&["admin", "token", "revoke", "--school", "8612001"])
        .await;
    assert!(out.status.success());

    let out = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let count: i64 = text
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    assert!(count >= 8, "{text}");

    let out = daemon.admin(&["admin", "audit", "export"]).await;
    let actions: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for action in [
        "school.add",
        "school.enrol",
        "school.get",
        "pack.upload",
        "inbox.list",
        "pack.download",
        "pack.acknowledge",
        "token.revoke",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing from {actions:?}"
        );
    }
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!log.contains(&a.token) && !log.contains(&b.token));

    // Alter each column of one entry in turn; restore it after each check.
    let db = common::open_db(&daemon.db_path()).await;
    for (seq, column, value) in [
        (3, "subject", "'8612999'"),
        (count, "actor", "'school:8612999'"),
        (1, "at_ms", "at_ms + 1"),
        (4, "prev_hash", "zeroblob(32)"),
        (2, "action", "'pack.purge'"),
    ] {
        let backup: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at_ms, actor, action, subject, prev_hash, hash FROM audit WHERE seq = ?",
        )
        .bind(seq)
        .fetch_all(&db)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE audit SET {column} = {value} WHERE seq = {seq}"
        )))
        .execute(&db)
        .await
        .unwrap();
        let out = daemon.admin(&["admin", "audit", "verify"]).await;
        assert_eq!(out.status.code(), Some(1), "{column} of {seq} altered");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("audit entry {seq}:")),
            "{column} of {seq}: {err}"
        );
        let (_, at, actor, action, subject, prev, hash) = backup.into_iter().next().unwrap();
        sqlx::query("UPDATE audit SET at_ms = ?, actor = ?, action = ?, subject = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(at)
            .bind(actor)
            .bind(action)
            .bind(subject)
            .bind(prev)
            .bind(hash)
            .bind(seq)
            .execute(&db)
            .await
            .unwrap();
        let out = daemon.admin(&["admin", "audit", "verify"]).await;
        assert!(out.status.success(), "restored {seq}");
    }
}

/// Issue 16 item 4: a refused call is in the audit log (who called from
/// where, and which method), without its request.
#[tokio::test]
async fn issue16_refused_calls_are_audited() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let refused = a
        .directory()
        .revoke_key(a.req(v1::RevokeKeyRequest {
            laestab: b.laestab.to_string(),
            key_id: b.identity.key_id().to_string(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = daemon.admin(&["admin", "audit", "export"]).await;
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = log.lines().find(|l| l.contains("call.refused")) {
            assert!(line.contains("/baton.v1.Directory/RevokeKey"), "{line}");
            assert!(line.contains("address:127.0.0.1"), "{line}");
            assert!(!line.contains(&b.identity.key_id().to_string()), "{line}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no call.refused in {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
