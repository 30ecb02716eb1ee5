//! Issue 18, mistakes and endings, with the real CLI and daemon: recall
//! before download, after download and after acknowledgement (and who may
//! recall), supersede, and the retention purge: ciphertext really gone from
//! SQLite's files and from PostgreSQL's tables, receipts still verifying,
//! deletion records in the audit chain.

use std::path::Path;

use baton::api::v1;
use baton::crypto::Identity;
use baton::pack::{PackId, Recall};
use futures::StreamExt as _;

use crate::common::cli::{Home, code, enrol, init, pupil, send_records};
use crate::common::reliability::byte_hits;
use crate::common::{Daemon, open_db, with_token};

/// `baton sent --json` as (upn → entry).
async fn sent(home: &Home) -> Vec<serde_json::Value> {
    home.json(&["sent", "--json"]).await
}

/// The id `sent` lists for pupil `upn`'s pack(s), oldest first.
fn ids_of(listing: &[serde_json::Value], upn: &str) -> Vec<String> {
    let mut ids: Vec<String> = listing
        .iter()
        .filter(|e| e["upn"] == upn)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn entry<'a>(listing: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    listing
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {listing:#?}"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let out = other.baton(&["recall", &id_a]).await;
    assert!(!out.status.success());

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
    let out = staff.baton(&["recall", &id]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("DSL"), "{}", stderr(&out));
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

    // The client checks what the server cannot: same pupil, same school.
    let other_pupil = folder(root.path(), "other", &pupil("Fix", 2));
    let out = primary
        .baton(&[
            "send",
            "--to",
            "8614001",
            "--supersedes",
            &third,
            &other_pupil,
        ])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("same pupil"), "{}", stderr(&out));
    record.notes = "sent elsewhere".into();
    let elsewhere = folder(root.path(), "v4", &record);
    let out = primary
        .baton(&[
            "send",
            "--to",
            "8614002",
            "--supersedes",
            &third,
            &elsewhere,
        ])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("same school"), "{}", stderr(&out));
    // Superseding the same pack twice is refused by the server too.
    let out = primary
        .baton(&[
            "send",
            "--to",
            "8614001",
            "--supersedes",
            &first,
            &elsewhere,
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already superseded"),
        "{}",
        stderr(&out)
    );
}

/// Pieces of every stored chunk's ciphertext, to look for in files.
async fn ciphertext_needles(daemon: &Daemon) -> Vec<Vec<u8>> {
    let pool = open_db(&daemon.db_path()).await;
    let chunks: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT data FROM pack_chunks")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(!chunks.is_empty());
    chunks
        .iter()
        .flat_map(|(data,)| {
            let at = [0, data.len() / 2, data.len().saturating_sub(48)];
            at.map(|i| data[i..(i + 48).min(data.len())].to_vec())
        })
        .filter(|n| n.len() >= 16)
        .collect()
}

/// (pack id, status, chunks the row says, chunks stored, ciphertext deleted).
async fn pack_rows(daemon: &Daemon) -> Vec<(String, String, i64, i64, i64)> {
    const SQL: &str = "SELECT p.pack_id, p.status, p.chunks, \
        (SELECT COUNT(*) FROM pack_chunks c WHERE c.upload_id = p.upload_id AND NOT c.staged), \
        CAST(CASE WHEN p.deleted_at_ms IS NULL THEN 0 ELSE 1 END AS BIGINT) FROM packs p ORDER BY p.seq";
    match &daemon.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let rows = sqlx::query_as(SQL).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        None => {
            let pool = open_db(&daemon.db_path()).await;
            let rows = sqlx::query_as(SQL).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    }
}

/// Every pack is whole or purged: all its chunks, or none and marked deleted.
async fn assert_whole_or_gone(daemon: &Daemon) -> usize {
    let rows = pack_rows(daemon).await;
    let mut gone = 0;
    for (id, status, chunks, stored, deleted) in &rows {
        if *deleted == 1 {
            gone += 1;
            assert_eq!(
                *stored, 0,
                "{id} ({status}) is marked deleted but has chunks"
            );
        } else {
            assert_eq!(stored, chunks, "{id} ({status}) is half there");
            assert_ne!(status, "purged", "{id} purged but not deleted");
        }
    }
    gone
}

/// Issue 18 items 3 and 4: retention purges acknowledged and uncollected
/// packs; the ciphertext is gone from the database files (SQLite: the file
/// and its WAL) or tables (PostgreSQL); the sender still verifies its
/// receipt and sees "not collected"; a pull says purged; the audit chain
/// verifies and names each purged pack.
async fn issue18_purge(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let (a, b) = (pupil("Purge", 1), pupil("Purge", 2));
    let out = send_records(&primary, root.path(), "8614001", &[a.clone(), b.clone()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = sent(&primary).await;
    let (id_a, id_b) = (
        ids_of(&listing, &a.upn)[0].clone(),
        ids_of(&listing, &b.upn)[0].clone(),
    );
    let received = root.path().join("received").display().to_string();
    secondary.ok(&["pull", &id_a, "--out", &received]).await;
    secondary.ok(&["ack", &id_a]).await;
    let needles = if daemon.database_url.is_none() {
        let needles = ciphertext_needles(&daemon).await;
        // The scan can find them: they are there before the purge.
        let (_, hits) = byte_hits(&[&daemon.data], &needles);
        assert!(
            !hits.is_empty(),
            "the scan finds no ciphertext before the purge"
        );
        needles
    } else {
        Vec::new()
    };

    let dry = daemon
        .admin(&[
            "admin",
            "purge",
            "--dry-run",
            "--acknowledged-days",
            "0",
            "--unacknowledged-days",
            "0",
            "--json",
        ])
        .await;
    assert!(dry.status.success(), "{}", stderr(&dry));
    let listed: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(
        assert_whole_or_gone(&daemon).await,
        0,
        "a dry run deleted something"
    );
    // With the default retention nothing is old enough yet.
    let none = daemon.admin(&["admin", "purge", "--json"]).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&none.stdout).unwrap(),
        serde_json::json!([])
    );

    let purged = daemon
        .admin(&[
            "admin",
            "purge",
            "--acknowledged-days",
            "0",
            "--unacknowledged-days",
            "0",
            "--json",
        ])
        .await;
    assert!(purged.status.success(), "{}", stderr(&purged));
    let purged: Vec<serde_json::Value> = serde_json::from_slice(&purged.stdout).unwrap();
    let reason_of =
        |id: &str| purged.iter().find(|p| p["pack_id"] == id).unwrap()["reason"].clone();
    assert_eq!(reason_of(&id_a), "acknowledged");
    assert_eq!(reason_of(&id_b), "not collected");
    assert_eq!(assert_whole_or_gone(&daemon).await, 2);

    if daemon.database_url.is_none() {
        let (scanned, hits) = byte_hits(&[&daemon.data], &needles);
        assert!(scanned.files >= 2);
        assert!(
            hits.is_empty(),
            "purged ciphertext is still in {:?}",
            hits.iter()
                .map(|h| h.0.display().to_string())
                .collect::<Vec<_>>()
        );
    }

    let listing = sent(&primary).await;
    let a_sent = entry(&listing, &id_a);
    assert_eq!(a_sent["state"], "purged");
    assert_eq!(a_sent["receipt_verified"], true, "{a_sent}");
    let b_sent = entry(&listing, &id_b);
    assert_eq!(b_sent["state"], "purged");
    assert_eq!(b_sent["purge_reason"], "not collected");
    let table = primary.ok(&["sent"]).await;
    assert!(table.contains("not collected"), "{table}");

    let out = secondary.baton(&["pull", &id_b, "--out", &received]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("purged on"), "{}", stderr(&out));
    assert!(secondary.json(&["inbox", "--json"]).await.is_empty());

    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    for (p, id) in [(&purged, &id_a), (&purged, &id_b)] {
        let sha = p.iter().find(|x| x["pack_id"] == id.as_str()).unwrap()["ciphertext_sha256"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            export
                .lines()
                .filter(|l| l.contains("pack.purge") && l.contains(id.as_str()) && l.contains(&sha))
                .count(),
            1,
            "one deletion record for {id}"
        );
    }
}

on_both_backends!(issue18_purge);

/// Issue 18: purges (two at once, as two nodes would) racing downloads,
/// acknowledgements, new uploads and retried uploads: every pack is whole
/// or gone, every download whole or refused as purged, one deletion record
/// per purged pack, and the audit chain verifies.
async fn issue18_purge_races(daemon: Daemon) {
    let sender = daemon.enrol("8612001").await;
    let receiver = daemon.enrol("8614001").await;
    let keys = sender.keys_of(&receiver.laestab).await;
    let upload = |n: usize| {
        let (sender, keys, to) = (&sender, &keys, receiver.laestab);
        async move {
            let mut sent = Vec::new();
            for _ in 0..n {
                let data = crate::common::ciphertext(300_000);
                let header = v1::PackHeader::from(&sender.header_for(&to, keys, &data));
                sender.upload(&header, &data, 64 * 1024).await.unwrap();
                sent.push((header, data));
            }
            sent
        }
    };
    let packs = upload(18).await;
    // A third downloaded and confirmed, a third to be acknowledged in the race.
    for (h, _) in &packs[..6] {
        receiver.download(&h.pack_id).await.unwrap();
        receiver
            .exchange()
            .confirm_download(receiver.req(v1::ConfirmDownloadRequest {
                pack_id: h.pack_id.clone(),
                ciphertext_sha256: h.ciphertext_sha256.clone(),
            }))
            .await
            .unwrap();
    }
    let purge = || {
        daemon.admin(&[
            "admin",
            "purge",
            "--acknowledged-days",
            "0",
            "--unacknowledged-days",
            "0",
            "--json",
        ])
    };
    // Eight at a time: a school may hold sixteen downloads open.
    let downloads = futures::stream::iter(packs.iter().map(|(h, data)| {
        let receiver = &receiver;
        async move {
            match receiver.download(&h.pack_id).await {
                Ok((_, got)) => assert!(got == *data, "a download was cut short or wrong"),
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
                    assert!(s.message().contains("purged"), "{s:?}");
                }
            }
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<()>>();
    let acks = futures::future::join_all(packs[6..12].iter().map(|(h, _)| {
        let receiver = &receiver;
        async move {
            let answer = receiver
                .exchange()
                .acknowledge(receiver.req(v1::AcknowledgeRequest {
                    receipt: Some(receiver.receipt(h)),
                }))
                .await;
            if let Err(s) = answer {
                assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
            }
        }
    }));
    let retry = async {
        let (h, data) = &packs[0];
        let _ = sender.upload(h, data, 64 * 1024).await.unwrap();
    };
    let (p1, p2, _, _, fresh, _) =
        tokio::join!(purge(), purge(), downloads, acks, upload(4), retry);
    assert!(
        p1.status.success() && p2.status.success(),
        "{}{}",
        stderr(&p1),
        stderr(&p2)
    );
    let gone = assert_whole_or_gone(&daemon).await;
    let purged_ids: Vec<String> = [p1, p2]
        .iter()
        .flat_map(|p| serde_json::from_slice::<Vec<serde_json::Value>>(&p.stdout).unwrap())
        .map(|p| p["pack_id"].as_str().unwrap().to_string())
        .collect();
    let mut unique = purged_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), purged_ids.len(), "a pack was purged twice");
    assert_eq!(gone, purged_ids.len());
    assert!(gone >= packs.len() - 6, "purged only {gone}");
    // The fresh uploads are whole or purged, and downloadable if whole.
    for (h, data) in &fresh {
        if let Ok((_, got)) = receiver.download(&h.pack_id).await {
            assert!(got == *data);
        }
    }
    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    assert_eq!(
        export.lines().filter(|l| l.contains("pack.purge")).count(),
        gone
    );
    // A recall of a purged pack explains itself.
    let (h, _) = &packs[1];
    let recall = sender
        .identity
        .sign_recall(Recall {
            pack_id: h.pack_id.parse::<PackId>().unwrap(),
            ciphertext_sha256: h.ciphertext_sha256.clone().try_into().unwrap(),
            recalled_at_ms: 3,
            signer_key_id: sender.identity.key_id(),
            reason: String::new(),
        })
        .unwrap();
    let refused = sender
        .exchange()
        .recall(sender.req(v1::RecallRequest {
            recall: Some(v1::Recall::from(&recall)),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
}

on_both_backends!(issue18_purge_races);
