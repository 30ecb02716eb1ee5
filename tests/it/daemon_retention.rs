//! Issue 18, endings: the retention purge with the real CLI and daemon.
//! Ciphertext really gone from SQLite's files (the database and its WAL)
//! and from PostgreSQL's tables, receipts still verifying at the sender,
//! deletion records in the audit chain, the daemon purging on its own, and
//! purges racing downloads, acknowledgements, uploads and each other.

use baton::api::v1;
use baton::pack::{PackId, Recall};
use futures::StreamExt as _;

use crate::client_lifecycle::{entry, ids_of, sent, stderr};
use crate::common::cli::{enrol, pupil, send_records};
use crate::common::reliability::byte_hits;
use crate::common::{Daemon, open_db};

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

/// (pack id, status, chunks the row says, chunks stored, ciphertext
/// deleted). Chunks stored are rows, and on SQLite the chunks of the
/// pack's ciphertext file (a pack of 256 KiB or more).
async fn pack_rows(daemon: &Daemon) -> Vec<(String, String, i64, i64, i64)> {
    const SQL: &str = "SELECT p.pack_id, p.status, p.chunks, \
        (SELECT COUNT(*) FROM pack_chunks c WHERE c.upload_id = p.upload_id AND NOT c.staged), \
        CAST(CASE WHEN p.deleted_at_ms IS NULL THEN 0 ELSE 1 END AS BIGINT), p.upload_id \
        FROM packs p ORDER BY p.seq";
    type Row = (String, String, i64, i64, i64, String);
    let rows: Vec<Row> = match &daemon.database_url {
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
    };
    let files = daemon.data.join("baton.db-ciphertext");
    rows.into_iter()
        .map(|(id, status, chunks, stored, deleted, upload)| {
            let in_file = std::fs::metadata(files.join(&upload))
                .map_or(0, |m| m.len().div_ceil(256 * 1024) as i64);
            (id, status, chunks, stored + in_file, deleted)
        })
        .collect()
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

    let dry = daemon.purge_now(&["--dry-run"]).await;
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

    let purged = daemon.purge_now(&[]).await;
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

/// Issue 18 item 3: the daemon purges by itself, with the retention it was
/// started with (here at start-up, as it does hourly); the sender sees "not
/// collected", and its journal forgets the pupil `keep_pupil_names_days`
/// after the pack ended.
#[tokio::test]
async fn issue18_the_daemon_purges_on_its_own() {
    let mut daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let record = pupil("Auto", 1);
    let out = send_records(
        &primary,
        root.path(),
        "8614001",
        std::slice::from_ref(&record),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = ids_of(&sent(&primary).await, &record.upn)[0].clone();
    daemon.kill9().await;
    daemon
        .restart(&["--retention-unacknowledged-days", "0"])
        .await;
    // The start-up run: wait for its log line (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&daemon.log)
        .unwrap_or_default()
        .contains("retention purged")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not purge"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let config = primary.dir.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    json["keep_pupil_names_days"] = 0.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let listing = sent(&primary).await;
    let e = entry(&listing, &id);
    assert_eq!(e["state"], "purged");
    assert_eq!(e["purge_reason"], "not collected");
    // Forgotten: the next listing no longer names the pupil.
    let e = entry(&sent(&primary).await, &id).clone();
    assert_eq!(
        (e["upn"].as_str(), e["name"].as_str()),
        (Some(""), Some("")),
        "{e}"
    );
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(!log.contains(&record.upn) && !log.contains(&record.surname));
}

/// Issue 18 item 5: server reflection describes `Recall` and the new states.
#[tokio::test]
async fn issue18_reflection_describes_recall() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let daemon = Daemon::start_sqlite(&[]).await;
    let requests =
        ["baton.v1.Exchange", "baton.v1.PackState"].map(|symbol| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        });
    let mut responses = ServerReflectionClient::new(daemon.channel().await)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut described = Vec::new();
    while let Some(response) = responses.message().await.unwrap() {
        if let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response {
            for file in files.file_descriptor_proto {
                described.extend(file);
            }
        }
    }
    for name in [
        "Recall",
        "RecallRequest",
        "superseded_by",
        "purge_reason",
        "PACK_STATE_RECALLED",
        "PACK_STATE_SUPERSEDED",
        "PACK_STATE_PURGED",
        "PACK_STATE_RECALL_REQUESTED",
        "supersedes",
    ] {
        assert!(
            described.windows(name.len()).any(|w| w == name.as_bytes()),
            "reflection does not describe {name}"
        );
    }
}
