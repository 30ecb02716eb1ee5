//! Issue 23, items 3 and 4: store and forward between two trusts' daemons.
//! A class crosses to another trust's school and its receipts come back;
//! a recall crosses too; collection and purge are reported back; packs
//! wait for a peer that is down and survive kill -9 of either side, each
//! arriving once; the sending daemon keeps no copy once the peer holds a
//! pack; neither daemon's files hold a pupil's name; on PostgreSQL, two
//! trusts of two nodes each.

use std::time::Duration;

use crate::client_lifecycle::stderr;
use crate::common::Daemon;
use crate::common::cli::{enrol, pupil, send_records};
use crate::common::reliability::plaintext_hits;
use crate::daemon_federation::{
    FEDERATING, add_peer, audited, listed_until, peer_of, pull_and_ack, schools_until, stdout,
    two_trusts,
};

#[tokio::test]
async fn issue23_a_class_crosses_to_another_trust_and_its_receipts_come_back() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, primary, secondary) = two_trusts(root.path()).await;
    let records: Vec<_> = (1..=6).map(|n| pupil("Okonkwo", n)).collect();
    let out = send_records(&primary, root.path(), "9264002", &records).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // A's school sees them relayed, B's school sees the class in its
    // inbox, as from A's school.
    let sent = primary.json(&["sent", "--json"]).await;
    assert!(sent.iter().all(|p| p["state"] == "relayed"), "{sent:?}");
    let inbox = listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 6).await;
    assert!(inbox.iter().all(|p| p["from"] == "8612001"), "{inbox:?}");

    // A's school recalls one (wrong pupil): the recall is passed on, B
    // withdraws it before its school collected it.
    let id = sent[0]["id"].as_str().unwrap().to_string();
    let recalled = primary
        .json(&["recall", &id, "--reason", "wrong school", "--json"])
        .await;
    assert_eq!(recalled[0]["state"], "recall_requested", "{recalled:?}");
    assert_eq!(recalled[0]["relayed_to"], "trust-b", "{recalled:?}");
    let inbox = listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 5).await;
    assert!(inbox.iter().all(|p| p["id"] != id.as_str()), "{inbox:?}");
    let recall_in_b = audited(&b, "pack.recall").await;
    assert_eq!(
        recall_in_b,
        [("peer:trust-a".to_string(), "pack.recall".to_string())]
    );

    // A's school corrects another pupil's record before B's school pulls
    // it: the correction crosses, and B withdraws the pack it replaces.
    let wrong = sent
        .iter()
        .find(|p| p["id"] != id.as_str())
        .unwrap()
        .clone();
    let wrong_id = wrong["id"].as_str().unwrap();
    let folder = root
        .path()
        .join(format!("pupil-{}", wrong["upn"].as_str().unwrap()));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("record.json")).unwrap()).unwrap();
    record["forename"] = "Samuel".into();
    std::fs::write(folder.join("record.json"), record.to_string()).unwrap();
    primary
        .ok(&[
            "send",
            "--to",
            "9264002",
            "--supersedes",
            wrong_id,
            folder.to_str().unwrap(),
        ])
        .await;
    let inbox = listed_until(&secondary, &["inbox", "--json"], |l| {
        l.len() == 5 && l.iter().any(|p| p["supersedes"] == wrong_id)
    })
    .await;
    assert!(inbox.iter().all(|p| p["id"] != wrong_id), "{inbox:?}");

    // Collected by B's school: A's school sees it (B reports it back).
    secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            root.path().join("pulled").to_str().unwrap(),
        ])
        .await;
    listed_until(&primary, &["sent", "--json"], |l| {
        l.iter().filter(|p| p["state"] == "downloaded").count() == 5
    })
    .await;
    secondary.ok(&["ack", "--all-pulled"]).await;

    // A's school sees every other pack acknowledged, each receipt verified
    // against B's school's key, and the recalled one as recalled.
    let sent = listed_until(&primary, &["sent", "--json"], |l| {
        l.len() == 7 && l.iter().filter(|p| p["state"] == "acknowledged").count() == 5
    })
    .await;
    assert!(
        sent.iter()
            .filter(|p| p["state"] == "acknowledged")
            .all(|p| p["receipt_verified"] == true),
        "{sent:?}"
    );
    let corrected = sent.iter().find(|p| p["id"] == wrong_id).unwrap();
    assert_eq!(corrected["state"], "superseded", "{corrected}");
    let recalled = sent.iter().find(|p| p["id"] == id.as_str()).unwrap();
    assert_eq!(recalled["state"], "recall_requested", "{recalled}");

    // Relaying is audited on both sides, each pack once, with the peer.
    let out_a = audited(&a, "pack.relay.out").await;
    assert_eq!(out_a.len(), 7, "{out_a:?}");
    assert!(
        out_a
            .iter()
            .all(|(actor, action)| actor == "peer:trust-b" && action == "pack.relay.out")
    );
    // Once B holds a pack, A's copy of its ciphertext is deleted (its
    // deletion record audited): one trust holds it at a time.
    let released = audited(&a, "pack.relay.release").await;
    assert_eq!(released.len(), 7, "{released:?}");
    let pool = crate::common::open_db(&a.db_path()).await;
    let (held,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM packs WHERE relay_to IS NOT NULL AND deleted_at_ms IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (chunks,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!((held, chunks), (0, 0));
    let in_b = audited(&b, "pack.relay").await;
    assert_eq!(in_b.len(), 7, "{in_b:?}");
    assert!(
        in_b.iter()
            .all(|(actor, action)| actor == "peer:trust-a" && action == "pack.relay.in")
    );
    let acks_a = audited(&a, "pack.acknowledge").await;
    assert_eq!(acks_a.len(), 5, "{acks_a:?}");
    assert!(acks_a.iter().all(|(actor, _)| actor == "peer:trust-b"));
    for daemon in [&a, &b] {
        let out = daemon.admin(&["admin", "audit", "verify"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Neither daemon can read a pack: no pupil's name or UPN in either's
    // files.
    let needles: Vec<String> = records
        .iter()
        .flat_map(|r| [r.upn.clone(), r.surname.clone()])
        .collect();
    let (scanned, hits) = plaintext_hits(&[a.data.as_path(), b.data.as_path()], &needles);
    assert!(hits.is_empty(), "plaintext found: {hits:?}");
    assert!(scanned.files > 0, "{scanned:?}");
}

#[tokio::test]
async fn issue23_packs_wait_for_a_peer_that_is_down_and_survive_kill9() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b, primary, secondary) = two_trusts(root.path()).await;
    let a_fed = a.printed("federation on https://").await;
    let b_fed = b.printed("federation on https://").await;
    let again = |listen: &str| {
        vec![
            "--federation-listen".to_string(),
            listen.to_string(),
            "--federation-sync-secs".to_string(),
            "1".to_string(),
        ]
    };

    // B goes down; A's school sends all the same (A holds the packs).
    b.kill9().await;
    let records: Vec<_> = (1..=5).map(|n| pupil("Nakamura", n)).collect();
    let out = send_records(&primary, root.path(), "9264002", &records).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // A tries, fails (its operator sees the queue and why), and is killed
    // with its queue full; both come back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = a.admin(&["admin", "peer", "list", "--json"]).await;
        let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if peers[0]["relay_error"].is_string() {
            assert_eq!(peers[0]["relay_waiting"], 5, "{peers}");
            let out = a.admin(&["admin", "peer", "list"]).await;
            assert!(
                stdout(&out).contains("relay queue    5 pack(s) waiting"),
                "{}",
                stdout(&out)
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{peers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One is recalled while it waits: A cannot know whether B took it
    // before the failure, so it says the recall goes to B, and passes it on.
    let sent = primary.json(&["sent", "--json"]).await;
    let recalled_id = sent[0]["id"].as_str().unwrap().to_string();
    let recalled = primary
        .json(&["recall", &recalled_id, "--reason", "wrong school", "--json"])
        .await;
    assert_eq!(recalled[0]["state"], "recall_requested", "{recalled:?}");
    assert_eq!(recalled[0]["relayed_to"], "trust-b", "{recalled:?}");
    a.kill9().await;
    let args = again(&a_fed);
    a.restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let args = again(&b_fed);
    b.restart(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;

    // Every other pack arrives exactly once, and the receipts come back;
    // the recall reached B as "not there".
    listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 4).await;
    pull_and_ack(&secondary, &root.path().join("pulled"), "8612001", 4).await;
    listed_until(&primary, &["sent", "--json"], |l| {
        l.len() == 5 && l.iter().filter(|p| p["state"] == "acknowledged").count() == 4
    })
    .await;
    assert_eq!(audited(&b, "pack.relay.in").await.len(), 4);
    assert_eq!(audited(&a, "pack.relay.out").await.len(), 4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while audited(&a, "pack.recall.relay.out").await.len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the recall never went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Now with B up, larger packs (kept in files), and A killed while it
    // relays them: each arrives once all the same.
    let mut folders = Vec::new();
    for n in 11..=18 {
        let record = pupil("Haddad", n);
        let dir = root.path().join(format!("large-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
        std::fs::write(dir.join("scan.bin"), crate::common::ciphertext(3 << 20)).unwrap();
        folders.push(dir.display().to_string());
    }
    let mut args = vec!["send".to_string(), "--to".into(), "9264002".into()];
    args.extend(folders.iter().cloned());
    let sending = {
        let primary = primary.clone();
        let args = args.clone();
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            primary.baton(&args).await
        })
    };
    // The moment B stages a relayed pack, A is killed: mid-relay.
    let staging = b.data.join("baton.db-ciphertext").join("staging");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&staging).map_or(0, |d| d.count()) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no relay began");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    a.kill9().await;
    let _ = sending.await.unwrap();
    let args_again = again(&a_fed);
    a.restart(&args_again.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    // The teacher runs the send again: what A stored is not sent twice.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    primary.ok(&args).await;
    listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 8).await;
    pull_and_ack(&secondary, &root.path().join("pulled-large"), "8612001", 8).await;
    listed_until(&primary, &["sent", "--json"], |l| {
        l.len() == 13 && l.iter().filter(|p| p["state"] == "acknowledged").count() == 12
    })
    .await;
    assert_eq!(audited(&b, "pack.relay.in").await.len(), 12);

    // One more that B's school never collects: B's retention purges it,
    // and A's school sees it purged, not collected (A's copy gone too).
    let out = send_records(&primary, root.path(), "9264002", &[pupil("Quinn", 40)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 1).await;
    let out = b.purge_now(&[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = listed_until(&primary, &["sent", "--json"], |l| {
        l.iter().any(|p| p["state"] == "purged")
    })
    .await;
    let purged: Vec<_> = sent.iter().filter(|p| p["state"] == "purged").collect();
    assert_eq!(purged.len(), 1, "{sent:?}");
    assert_eq!(
        sent.iter().filter(|p| p["state"] == "acknowledged").count(),
        12,
        "{sent:?}"
    );
    // A holds no file of the large packs now B has them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while crate::common::ciphertext_files(&a.data).1 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A still holds files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing half-relayed is left staged on B.
    let staging = b.data.join("baton.db-ciphertext").join("staging");
    let staged = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "left in {}", staging.display());
}

/// The count of audit entries of `action` in the PostgreSQL database at
/// `url`.
async fn audited_pg(url: &str, action: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit WHERE action = $1")
        .bind(action)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// On PostgreSQL, two trusts of two nodes each: every node relays and
/// answers relays; a class crosses once, each pack stored once, and the
/// receipts come back, whichever nodes the schools use.
#[tokio::test]
async fn issue23_two_trusts_of_two_postgres_nodes_each() {
    let what = "issue23_two_trusts_of_two_postgres_nodes_each";
    let Some(a1) = Daemon::start_postgres(what, FEDERATING).await else {
        return;
    };
    let Some(b1) = Daemon::start_postgres(what, FEDERATING).await else {
        return;
    };
    let a2 = Daemon::start_node_of(&a1, FEDERATING).await;
    let b2 = Daemon::start_node_of(&b1, FEDERATING).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&a1, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&b2, root.path(), "9264002", "secondary", &["staff", "dsl"]).await;
    // Each trust's descriptor names one node's listener (in practice the
    // trust's load balancer): the other trust's nodes all reach it there.
    add_peer(&a2, "trust-a", &b1).await;
    add_peer(&b1, "trust-b", &a1).await;
    schools_until(&primary, |l| peer_of(l, "9264002").is_some()).await;
    schools_until(&secondary, |l| peer_of(l, "8612001").is_some()).await;

    let records: Vec<_> = (1..=4).map(|n| pupil("Adeyemi", n)).collect();
    let out = send_records(&primary, root.path(), "9264002", &records).await;
    assert!(out.status.success(), "{}", stderr(&out));
    listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 4).await;
    pull_and_ack(&secondary, &root.path().join("pulled"), "8612001", 4).await;
    listed_until(&primary, &["sent", "--json"], |l| {
        l.len() == 4
            && l.iter()
                .all(|p| p["state"] == "acknowledged" && p["receipt_verified"] == true)
    })
    .await;
    // Both of A's nodes work the same queue: each pack relayed (and
    // stored at B) once, each receipt recorded once.
    let (a_url, b_url) = (
        a1.database_url.clone().unwrap(),
        b1.database_url.clone().unwrap(),
    );
    assert_eq!(audited_pg(&b_url, "pack.relay.in").await, 4);
    assert_eq!(audited_pg(&a_url, "pack.relay.out").await, 4);
    assert_eq!(audited_pg(&a_url, "pack.acknowledge").await, 4);
    assert_eq!(audited_pg(&a_url, "pack.relay.release").await, 4);
    let out = a2.admin(&["admin", "peer", "list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers[0]["relay_waiting"], 0, "{peers}");
    assert_eq!(peers[0]["schools"], 1, "{peers}");
    drop((a2, b2));
}
