//! Issue 18, mistakes, with the real CLI and daemon: recall before
//! download, after download and after acknowledgement (and who may recall),
//! supersede, and what a hostile server cannot fake about either. Retention
//! is in `daemon_retention`.

use std::path::Path;

use baton::api::v1;
use baton::crypto::Identity;
use baton::pack::Recall;

use crate::common::cli::{Home, code, enrol, init, pupil, send_records};
use crate::common::{Daemon, open_db, with_token};

/// `baton sent --json` as (upn → entry).
pub async fn sent(home: &Home) -> Vec<serde_json::Value> {
    home.json(&["sent", "--json"]).await
}

/// The id `sent` lists for pupil `upn`'s pack(s), oldest first.
pub fn ids_of(listing: &[serde_json::Value], upn: &str) -> Vec<String> {
    let mut ids: Vec<String> = listing
        .iter()
        .filter(|e| e["upn"] == upn)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

pub fn entry<'a>(listing: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    listing
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {listing:#?}"))
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `baton ARGS` in `home`, expecting it to fail saying `says`.
async fn refuses(home: &Home, args: &[&str], says: &str) {
    let out = home.baton(args).await;
    assert!(!out.status.success(), "baton {args:?} succeeded");
    assert!(stderr(&out).contains(says), "{}", stderr(&out));
}

/// The home's identity, to sign by hand what the CLI would not send.
fn identity(home: &Home) -> Identity {
    Identity::from_file_bytes(&std::fs::read(home.dir.join("identity.txt")).unwrap(), None).unwrap()
}

/// Issue 18 item 1: recall before download, after download, after
/// acknowledgement; another school's token is refused; a recall is
/// idempotent, audited, and shown to the destination as a signed notice.
async fn issue18_recall(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(
        &daemon,
        root.path(),
        "8612001",
        "primary",
        &["dsl", "staff"],
    )
    .await;
    let secondary = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;
    let other = enrol(&daemon, root.path(), "8614002", "secondary", &["staff"]).await;
    let (a, b, c) = (pupil("Recall", 1), pupil("Recall", 2), pupil("Recall", 3));
    let out = send_records(
        &primary,
        root.path(),
        "8614001",
        &[a.clone(), b.clone(), c.clone()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = sent(&primary).await;
    let (id_a, id_b, id_c) = (
        ids_of(&listing, &a.upn)[0].clone(),
        ids_of(&listing, &b.upn)[0].clone(),
        ids_of(&listing, &c.upn)[0].clone(),
    );
    let received = root.path().join("received");
    let received_s = received.display().to_string();
    secondary
        .ok(&["pull", &id_b, &id_c, "--out", &received_s])
        .await;
    secondary.ok(&["ack", &id_c]).await;

    // Another school's token: refused, whether or not it signs for itself.
    let stranger = identity(&other);
    let forged = stranger
        .sign_recall(Recall {
            pack_id: id_a.parse().unwrap(),
            ciphertext_sha256: [0; 32],
            recalled_at_ms: 1,
            signer_key_id: stranger.key_id(),
            reason: String::new(),
        })
        .unwrap();
    let refused = v1::exchange_client::ExchangeClient::new(daemon.channel().await)
        .recall(with_token(
            &other.token(),
            v1::RecallRequest {
                recall: Some(v1::Recall::from(&forged)),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    refuses(&other, &["recall", &id_a], "no such pack").await;

    // A reason naming the pupil is refused before anything is sent.
    let out = primary
        .baton(&[
            "recall",
            &id_a,
            "--reason",
            &format!("wrong school for {}", a.upn),
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Before download: deleted, gone from the inbox, not downloadable.
    let said = primary
        .ok(&["recall", &id_a, "--reason", "sent to the wrong school"])
        .await;
    assert!(said.contains("had not downloaded it"), "{said}");
    // After download and after acknowledgement: a signed notice.
    let said = primary
        .ok(&[
            "recall",
            &id_b,
            &id_c,
            "--reason",
            "sent before the SENCO report",
        ])
        .await;
    assert_eq!(said.matches("cannot be un-sent").count(), 2, "{said}");
    // Again: the first recall stands.
    let again = primary.json(&["recall", &id_a, "--json"]).await;
    assert_eq!(again[0]["state"], "recalled");

    let listing = sent(&primary).await;
    assert_eq!(entry(&listing, &id_a)["state"], "recalled");
    assert_eq!(
        entry(&listing, &id_a)["recall_reason"],
        "sent to the wrong school"
    );
    assert_eq!(entry(&listing, &id_b)["state"], "recall_requested");
    let c_sent = entry(&listing, &id_c);
    assert_eq!(c_sent["state"], "recall_requested");
    assert_eq!(c_sent["receipt_verified"], true);
    assert!(c_sent["deleted_at"].is_string());

    let inbox = secondary.json(&["inbox", "--json"]).await;
    assert!(inbox.iter().all(|e| e["id"] != id_a.as_str()), "{inbox:#?}");
    for id in [&id_b, &id_c] {
        let e = entry(&inbox, id);
        assert_eq!(e["recalled"], true, "{e}");
        assert_eq!(e["recall_reason"], "sent before the SENCO report");
        assert_eq!(e["withdrawal_verified"], true);
        assert_eq!(e["overdue"], false);
    }
    let out = secondary
        .baton(&["pull", &id_a, "--out", &received_s])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("recalled by its sender"),
        "{}",
        stderr(&out)
    );
    let out = secondary
        .baton(&["pull", &id_b, "--out", &received_s])
        .await;
    assert!(
        stderr(&out).contains("already pulled") || out.status.success(),
        "{}",
        stderr(&out)
    );
    let out = secondary
        .baton(&["pull", "--all", "--out", &received_s])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let loud = stderr(&out);
    assert_eq!(loud.matches("RECALLED").count(), 2, "{loud}");
    assert!(loud.contains("It was pulled here into"), "{loud}");

    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    for id in [&id_a, &id_b, &id_c] {
        assert!(
            export
                .lines()
                .any(|l| l.contains("pack.recall") && l.contains(id.as_str())),
            "no recall entry for {id}"
        );
    }
}

on_both_backends!(issue18_recall);

/// Issue 18 item 1: a child-protection file is recalled by a DSL key, not a
/// staff key of the same school.
#[tokio::test]
async fn issue18_a_staff_key_cannot_recall_a_safeguarding_pack() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let dsl = enrol(
        &daemon,
        root.path(),
        "8612001",
        "primary",
        &["dsl", "staff"],
    )
    .await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let staff = init(
        &daemon,
        root.path(),
        "8612001",
        &code(&daemon, "8612001").await,
        &["staff"],
    )
    .await;
    let record = pupil("Safe", 1);
    let dir = root.path().join("cp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
    dsl.ok(&[
        "send",
        "--to",
        "8614001",
        "--kind",
        "safeguarding",
        &dir.display().to_string(),
    ])
    .await;
    let id = ids_of(&sent(&dsl).await, &record.upn)[0].clone();
    refuses(&staff, &["recall", &id], "DSL").await;
    assert_eq!(entry(&sent(&dsl).await, &id)["state"], "pending");
    dsl.ok(&["recall", &id]).await;
    assert_eq!(entry(&sent(&dsl).await, &id)["state"], "recalled");
}

/// Writes `record` as a pack folder named `name` under `root`.
fn folder(root: &Path, name: &str, record: &baton::record::TransitionRecord) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
    dir.display().to_string()
}

/// Issue 18 item 2: a corrected pack names the one it replaces; the
/// receiver sees one live pack, the sender the chain; a correction of a
/// pack already downloaded shows the old one as a notice; the sender's
/// client refuses a correction for another pupil or another school.
#[tokio::test]
async fn issue18_supersede() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let _other = enrol(&daemon, root.path(), "8614002", "secondary", &["staff"]).await;
    let mut record = pupil("Fix", 1);
    primary
        .ok(&[
            "send",
            "--to",
            "8614001",
            "--left",
            "2026-07-20",
            &folder(root.path(), "v1", &record),
        ])
        .await;
    let first = ids_of(&sent(&primary).await, &record.upn)[0].clone();
    record.notes = "SENCO report added".into();
    let v2 = folder(root.path(), "v2", &record);
    primary
        .ok(&["send", "--to", "8614001", "--supersedes", &first, &v2])
        .await;
    let ids = ids_of(&sent(&primary).await, &record.upn);
    let second = ids.iter().find(|i| **i != first).unwrap().clone();

    let inbox = secondary.json(&["inbox", "--json"]).await;
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["id"], second.as_str());
    assert_eq!(inbox[0]["supersedes"], first.as_str());
    // The correction keeps the leaving date the clock counts from.
    assert_eq!(inbox[0]["left"], "2026-07-20");
    let listing = sent(&primary).await;
    assert_eq!(entry(&listing, &first)["state"], "superseded");
    assert_eq!(entry(&listing, &first)["superseded_by"], second.as_str());
    assert_eq!(entry(&listing, &second)["state"], "pending");

    let received = root.path().join("received").display().to_string();
    let said = secondary.ok(&["pull", "--all", "--out", &received]).await;
    assert!(
        said.contains(&format!("corrects and replaces pack {first}")),
        "{said}"
    );

    // A correction of a pack already downloaded: the old one is a notice.
    record.notes = "SENCO report and medical plan added".into();
    let v3 = folder(root.path(), "v3", &record);
    primary
        .ok(&["send", "--to", "8614001", "--supersedes", &second, &v3])
        .await;
    let third = ids_of(&sent(&primary).await, &record.upn)
        .into_iter()
        .find(|i| *i != first && *i != second)
        .unwrap();
    let inbox = secondary.json(&["inbox", "--json"]).await;
    let old = entry(&inbox, &second);
    assert_eq!(old["state"], "superseded", "{old}");
    assert_eq!(old["superseded_by"], third.as_str());
    assert_eq!(old["withdrawal_verified"], true);
    assert_eq!(entry(&inbox, &third)["supersedes"], second.as_str());
    // The correction recalled before it was downloaded: the old pack's
    // link can no longer be checked, and says so.
    primary.ok(&["recall", &third]).await;
    let inbox = secondary.json(&["inbox", "--json"]).await;
    assert_eq!(entry(&inbox, &second)["state"], "superseded, not checked");
    let out = secondary.baton(&["inbox"]).await;
    assert!(
        stderr(&out).contains("cannot be checked"),
        "{}",
        stderr(&out)
    );

    // The client checks what the server cannot: same pupil, same school.
    let other_pupil = folder(root.path(), "other", &pupil("Fix", 2));
    refuses(
        &primary,
        &[
            "send",
            "--to",
            "8614001",
            "--supersedes",
            &third,
            &other_pupil,
        ],
        "same pupil",
    )
    .await;
    record.notes = "sent elsewhere".into();
    let elsewhere = folder(root.path(), "v4", &record);
    refuses(
        &primary,
        &[
            "send",
            "--to",
            "8614002",
            "--supersedes",
            &third,
            &elsewhere,
        ],
        "same school",
    )
    .await;
    // Superseding the same pack twice is refused by the server too.
    refuses(
        &primary,
        &[
            "send",
            "--to",
            "8614001",
            "--supersedes",
            &first,
            &elsewhere,
        ],
        "already superseded",
    )
    .await;
}

/// Issue 18, a hostile server (here: whoever holds the daemon's disk) makes
/// up withdrawals: a recall signed by a key that is not the sender's, and a
/// "superseded" link no signed header makes. The destination and the
/// sender show each as not verifying.
#[tokio::test]
async fn issue18_a_server_cannot_make_up_a_withdrawal() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let records = [pupil("Fake", 1), pupil("Fake", 2), pupil("Fake", 3)];
    let out = send_records(&primary, root.path(), "8614001", &records).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = sent(&primary).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| ids_of(&listing, &r.upn)[0].clone())
        .collect();
    let received = root.path().join("received").display().to_string();
    secondary
        .ok(&["pull", &ids[0], &ids[1], "--out", &received])
        .await;

    let db = open_db(&daemon.db_path()).await;
    let (sha,): (Vec<u8>,) =
        sqlx::query_as("SELECT ciphertext_sha256 FROM packs WHERE pack_id = $1")
            .bind(&ids[0])
            .fetch_one(&db)
            .await
            .unwrap();
    let impostor = Identity::generate();
    let forged = impostor
        .sign_recall(Recall {
            pack_id: ids[0].parse().unwrap(),
            ciphertext_sha256: sha.try_into().unwrap(),
            recalled_at_ms: 5,
            signer_key_id: impostor.key_id(),
            reason: "delete it".into(),
        })
        .unwrap();
    use prost::Message as _;
    sqlx::query(
        "UPDATE packs SET recall = $1, recalled_at_ms = 5, deleted_at_ms = 5 WHERE pack_id = $2",
    )
    .bind(v1::Recall::from(&forged).encode_to_vec())
    .bind(&ids[0])
    .execute(&db)
    .await
    .unwrap();
    // Pack 1 "superseded" by pack 2 (listed too), whose signed header
    // names no pack.
    sqlx::query("UPDATE packs SET superseded_by = $1, recalled_at_ms = 5, deleted_at_ms = 5 WHERE pack_id = $2")
        .bind(&ids[2])
        .bind(&ids[1])
        .execute(&db)
        .await
        .unwrap();
    db.close().await;

    let inbox = secondary.json(&["inbox", "--json"]).await;
    for id in &ids[..2] {
        let e = entry(&inbox, id);
        assert_eq!(e["withdrawal_verified"], false, "{e}");
        assert_eq!(e["recalled"], false, "{e}");
        assert_eq!(e["state"], "withdrawal does not verify", "{e}");
    }
    let out = secondary.baton(&["inbox"]).await;
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    let listing = sent(&primary).await;
    assert_eq!(entry(&listing, &ids[0])["state"], "recall does not verify");
    assert_eq!(entry(&listing, &ids[2])["state"], "pending");
}
