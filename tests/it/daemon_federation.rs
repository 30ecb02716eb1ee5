//! Issue 23, items 1 and 2: two trusts' daemons that added each other's
//! descriptors reach each other over mutual TLS on their federation
//! listeners (`batond serve --federation-listen`), and each one's schools
//! see the other's schools in `baton schools`, marked with the peer's name.
//! A daemon that is not a peer is refused at the handshake, a peer removed
//! is refused from then on, and a LAESTAB claimed twice is listed by no
//! peer and shown to the operators as a conflict.

use std::time::Duration;

use crate::client_lifecycle::stderr;
use crate::common::Daemon;
use crate::common::cli::{Home, enrol, pupil, send_records};
use crate::common::reliability::plaintext_hits;

/// Flags of a daemon that federates, reading its peers' directories every
/// second.
const FEDERATING: &[&str] = &[
    "--federation-listen",
    "127.0.0.1:0",
    "--federation-sync-secs",
    "1",
];

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exports `from`'s descriptor as `name` (its federation listener's URL)
/// and adds it on `to` with the daemon key fingerprint `export` printed.
pub async fn add_peer(from: &Daemon, name: &str, to: &Daemon) {
    add_peer_with(from, name, to, &[]).await;
}

/// [`add_peer`], passing `extra` to `peer add`.
pub async fn add_peer_with(from: &Daemon, name: &str, to: &Daemon, extra: &[&str]) {
    let url = from.printed("federation on ").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.json"));
    let file = file.to_str().unwrap();
    let args = ["admin", "peer", "export", file, "--name", name, "--url"];
    let out = from.admin(&[&args[..], &[url.as_str()]].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let fingerprint = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("daemon key"))
        .unwrap()
        .trim()
        .to_string();
    let add = ["admin", "peer", "add", file, "--fingerprint", &fingerprint];
    let out = to.admin(&[&add[..], extra].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Waits (up to 20 s) until `home`'s `baton schools --json` satisfies
/// `done`, and returns that listing.
async fn schools_until(
    home: &Home,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = home.json(&["schools", "--json"]).await;
        if done(&listed) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listed as expected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `batond admin peer check NAME` on `daemon` until it succeeds (or,
/// with `ok` false, fails), for up to 20 s, and returns that run.
async fn checked(daemon: &Daemon, name: &str, ok: bool) -> std::process::Output {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = daemon.admin(&["admin", "peer", "check", name]).await;
        if out.status.success() == ok {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer check {name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The peer named on `laestab`'s row, if it is listed.
fn peer_of<'a>(listed: &'a [serde_json::Value], laestab: &str) -> Option<&'a serde_json::Value> {
    listed
        .iter()
        .find(|s| s["laestab"] == laestab)
        .map(|s| &s["peer"])
}

#[tokio::test]
async fn issue23_peers_meet_over_mutual_tls_and_share_directories() {
    let a = Daemon::start_sqlite(FEDERATING).await;
    let b = Daemon::start_sqlite(FEDERATING).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&a, root.path(), "8614001", "primary", &["staff"]).await;
    let secondary = enrol(&b, root.path(), "9264002", "secondary", &["staff", "dsl"]).await;

    // Before peering: each daemon lists its own schools only, and a check
    // of a peer it does not know names the problem.
    let listed = primary.json(&["schools", "--json"]).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let out = a.admin(&["admin", "peer", "check", "trust-b"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no peer named"), "{}", stderr(&out));

    // B's agreement with A covers A's two local authorities.
    add_peer_with(&a, "trust-a", &b, &["--la", "861", "--la", "926"]).await;
    add_peer(&b, "trust-b", &a).await;
    let out = b.admin(&["admin", "peer", "list"]).await;
    assert!(
        stdout(&out).contains("authorities    861, 926"),
        "{}",
        stdout(&out)
    );
    let out = b
        .admin(&[
            "admin",
            "peer",
            "add",
            "/nonexistent",
            "--fingerprint",
            "00",
            "--la",
            "86",
        ])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("3 digits"), "{}", stderr(&out));

    // The operator's check: through mutual TLS, B's key as pinned, and B
    // knows A by the name A exported (once B's daemon has read its new
    // peer, within seconds).
    let out = checked(&a, "trust-b", true).await;
    let said = stdout(&out);
    assert!(said.contains("\"trust-a\""), "{said}");
    assert!(said.contains("1 school(s)"), "{said}");

    // A's school sees B's, marked as B's, with its keys to seal to; and
    // the other way round.
    let listed = schools_until(&primary, |l| peer_of(l, "9264002").is_some()).await;
    assert_eq!(peer_of(&listed, "9264002").unwrap(), "trust-b");
    assert_eq!(
        peer_of(&listed, "8614001").unwrap(),
        &serde_json::Value::Null
    );
    let row = listed.iter().find(|s| s["laestab"] == "9264002").unwrap();
    assert_eq!(row["keys"], 1);
    let listed = schools_until(&secondary, |l| peer_of(l, "8614001").is_some()).await;
    assert_eq!(peer_of(&listed, "8614001").unwrap(), "trust-a");

    // Pinned as a local school is (no directory key pinned: first sight),
    // and shown as another trust's.
    let shown = primary
        .json_value(&["schools", "show", "9264002", "--json"])
        .await;
    assert_eq!(shown["peer"], "trust-b");
    assert_eq!(shown["pin"], "not pinned before (pinned now)");
    let shown = primary
        .json_value(&["schools", "show", "9264002", "--json"])
        .await;
    assert_eq!(shown["pin"], "matches the pinned keys");

    // B's school enrols a second device: A's school is warned of the
    // change, as for a school of its own trust, until it confirms it.
    let code = crate::common::cli::code(&b, "9264002").await;
    crate::common::cli::init(
        &b,
        &root.path().join("second"),
        "9264002",
        &code,
        &["staff"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let shown = primary
            .json_value(&["schools", "show", "9264002", "--json"])
            .await;
        if shown["pin"] == "CHANGED since pinned" {
            assert!(
                shown["changes"][0].as_str().unwrap().contains("new key"),
                "{shown}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    primary.ok(&["schools", "trust", "9264002"]).await;
    let shown = primary
        .json_value(&["schools", "show", "9264002", "--json"])
        .await;
    assert_eq!(shown["pin"], "matches the pinned keys", "{shown}");

    // `peer list` says when the directory was read, and how many schools.
    let out = a.admin(&["admin", "peer", "list", "--json"]).await;
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers[0]["schools"], 1, "{peers}");
    assert!(peers[0]["synced_at"].is_string(), "{peers}");
    assert_eq!(peers[0]["conflicts"], serde_json::json!([]));

    // A LAESTAB both trusts claim (A enrols B's school by mistake): A's
    // schools see A's own, and both operators see the conflict.
    enrol(&a, root.path(), "9264002", "secondary", &["staff"]).await;
    let listed = schools_until(&primary, |l| {
        l.iter().filter(|s| s["laestab"] == "9264002").count() == 1
            && peer_of(l, "9264002") == Some(&serde_json::Value::Null)
    })
    .await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let out = a.admin(&["admin", "peer", "list"]).await;
    let said = stdout(&out);
    assert!(
        said.contains("CONFLICT       9264002 is claimed by this daemon and trust-b"),
        "{said}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = b.admin(&["admin", "peer", "list"]).await;
        if stdout(&out).contains("CONFLICT       9264002 is claimed by this daemon and trust-a") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", stdout(&out));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A third daemon that added A's descriptor, but that A never added, is
    // refused at A's handshake.
    let c = Daemon::start_sqlite(FEDERATING).await;
    add_peer(&a, "trust-a", &c).await;
    let out = c.admin(&["admin", "peer", "check", "trust-a"]).await;
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("peer trust-a at https://"), "{error}");
    assert!(
        error.contains("has its operator added this daemon's descriptor?"),
        "{error}"
    );
    let peers = c.admin(&["admin", "peer", "list", "--json"]).await;
    let peers: serde_json::Value = serde_json::from_slice(&peers.stdout).unwrap();
    assert_eq!(peers[0]["schools"], 0, "C read nothing of A's: {peers}");

    // Nor does a caller without a certificate get an answer, even one
    // that trusts A's federation CA.
    let url = a.printed("federation on ").await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(a.data.join("federation/ca.pem")).unwrap(),
        ))
        .domain_name("batond-federation");
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .tls_config(tls)?
            .connect()
            .await?;
        let mut client = baton::api::v1::federation_client::FederationClient::new(channel);
        client
            .peer_schools(baton::api::v1::PeerSchoolsRequest {})
            .await
            .map_err(Box::<dyn std::error::Error>::from)
    }
    .await;
    assert!(refused.is_err(), "answered a caller with no certificate");

    // B stops trusting A: A is refused from then on (no restart of B).
    let out = b.admin(&["admin", "peer", "remove", "trust-a"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    checked(&a, "trust-b", false).await;
    // B's schools no longer see A's.
    schools_until(&secondary, |l| peer_of(l, "8614001").is_none()).await;
}

/// Waits (up to 60 s) until `home`'s `baton ARGS --json` listing
/// satisfies `done`, and returns it.
async fn listed_until(
    home: &Home,
    args: &[&str],
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listed = home.json(args).await;
        if done(&listed) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "baton {args:?} never as expected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Audit actions of `daemon` starting `prefix`, in order (SQLite).
async fn audited(daemon: &Daemon, prefix: &str) -> Vec<(String, String)> {
    let pool = crate::common::open_db(&daemon.db_path()).await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit WHERE action LIKE $1 ORDER BY seq")
            .bind(format!("{prefix}%"))
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

/// Two trusts peered both ways, each with one school; returns the daemons
/// once A's school sees B's.
async fn two_trusts(root: &std::path::Path) -> (Daemon, Daemon, Home, Home) {
    two_trusts_with(root, &[]).await
}

/// [`two_trusts`], passing `extra` to A's daemon.
async fn two_trusts_with(root: &std::path::Path, extra: &[&str]) -> (Daemon, Daemon, Home, Home) {
    let a = Daemon::start_sqlite(&[FEDERATING, extra].concat()).await;
    let b = Daemon::start_sqlite(FEDERATING).await;
    let primary = enrol(&a, root, "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&b, root, "9264002", "secondary", &["staff", "dsl"]).await;
    add_peer(&a, "trust-a", &b).await;
    add_peer(&b, "trust-b", &a).await;
    schools_until(&primary, |l| peer_of(l, "9264002").is_some()).await;
    schools_until(&secondary, |l| peer_of(l, "8612001").is_some()).await;
    (a, b, primary, secondary)
}

/// Pulls and acknowledges everything in `home`'s inbox; checks each pack
/// verified as from `from`.
async fn pull_and_ack(home: &Home, out: &std::path::Path, from: &str, count: usize) {
    home.ok(&["pull", "--all", "--out", out.to_str().unwrap()])
        .await;
    let pulled: Vec<_> = std::fs::read_dir(out.join(from))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(pulled.len(), count);
    for dir in &pulled {
        let pack: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("pack.json")).unwrap()).unwrap();
        assert_eq!(pack["verified"], true, "{pack}");
        assert_eq!(pack["from"], from);
    }
    home.ok(&["ack", "--all-pulled"]).await;
}

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
        l.len() == 6 && l.iter().filter(|p| p["state"] == "acknowledged").count() == 5
    })
    .await;
    assert!(
        sent.iter()
            .filter(|p| p["id"] != id.as_str())
            .all(|p| p["receipt_verified"] == true),
        "{sent:?}"
    );
    let recalled = sent.iter().find(|p| p["id"] == id.as_str()).unwrap();
    assert_eq!(recalled["state"], "recall_requested", "{recalled}");

    // Relaying is audited on both sides, each pack once, with the peer.
    let out_a = audited(&a, "pack.relay.out").await;
    assert_eq!(out_a.len(), 6, "{out_a:?}");
    assert!(
        out_a
            .iter()
            .all(|(actor, action)| actor == "peer:trust-b" && action == "pack.relay.out")
    );
    // Once B holds a pack, A's copy of its ciphertext is deleted (its
    // deletion record audited): one trust holds it at a time.
    let released = audited(&a, "pack.relay.release").await;
    assert_eq!(released.len(), 6, "{released:?}");
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
    assert_eq!(in_b.len(), 6, "{in_b:?}");
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

/// A `Federation` client to `to`'s federation listener presenting
/// `from`'s federation certificate: what `from`'s daemon (or whoever holds
/// its disk) can send.
async fn as_peer(
    from: &Daemon,
    to: &Daemon,
) -> baton::api::v1::federation_client::FederationClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let url = to.printed("federation on ").await;
    let read = |d: &Daemon, f: &str| std::fs::read(d.data.join("federation").join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(to, "ca.pem")))
        .identity(Identity::from_pem(
            read(from, "cert.pem"),
            read(from, "key.pem"),
        ))
        .domain_name("batond-federation");
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    baton::api::v1::federation_client::FederationClient::new(channel)
}

/// Relays `header` and `ciphertext` through `client`.
async fn relay(
    client: &mut baton::api::v1::federation_client::FederationClient<tonic::transport::Channel>,
    header: baton::api::v1::PackHeader,
    ciphertext: &[u8],
) -> Result<baton::api::v1::RelayReceipt, tonic::Status> {
    use baton::api::v1::{RelayMessage, relay_message::Part};
    let messages = vec![
        RelayMessage {
            part: Some(Part::Header(header)),
        },
        RelayMessage {
            part: Some(Part::Chunk(ciphertext.to_vec())),
        },
    ];
    client
        .relay(futures_util::stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// What a hostile peer (B's daemon, or a thief of its disk) can and cannot
/// relay to A: only packs from B's schools, signed by their keys, to A's
/// schools, sealed to their keys; and it can pass back only receipts for
/// packs A relayed to it, signed by its school's key.
#[tokio::test]
async fn issue23_a_hostile_peer_cannot_pass_off_packs_or_receipts() {
    use baton::api::v1;
    use baton::pack::{FORMAT_VERSION, Header, Kind, PackId, recipients_for};
    use sha2::{Digest as _, Sha256};

    let root = tempfile::tempdir().unwrap();
    // A holds at most 5,000 bytes from B's schools waiting.
    let quota = ["--federation-peer-quota-bytes", "5000"];
    let (a, b, primary, _secondary) = two_trusts_with(root.path(), &quota).await;
    // A school of B's, enrolled through the API so the test holds its key.
    let sender = b.enrol("9264003").await;
    schools_until(&primary, |l| peer_of(l, "9264003").is_some()).await;
    let to: baton::Laestab = "8612001".parse().unwrap();
    let keys = sender.keys_of(&to).await;
    let ciphertext = crate::common::ciphertext(3000);
    let header_from = |from: &str, keys: &[baton::keys::SchoolKey]| {
        let signed = sender
            .identity
            .sign_header(Header {
                format_version: FORMAT_VERSION,
                pack_id: PackId::new(),
                from: from.parse().unwrap(),
                to,
                kind: Kind::Transfer,
                created_at_ms: 1,
                ciphertext_len: ciphertext.len() as u64,
                ciphertext_sha256: Sha256::digest(&ciphertext).into(),
                sender_key_id: sender.identity.key_id(),
                recipient_key_ids: recipients_for(Kind::Transfer, keys)
                    .iter()
                    .map(|k| k.key_id())
                    .collect(),
                left_on: Some(time::macros::date!(2026 - 07 - 22)),
                supersedes: None,
                forwarded: None,
            })
            .unwrap();
        v1::PackHeader::from(&signed)
    };
    let mut client = as_peer(&b, &a).await;

    // Bytes that are not the ones signed for: refused, nothing stored.
    let status = relay(&mut client, header_from("9264003", &keys), &ciphertext[1..])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A pack from B's school, signed by its key: stored, and A's signed
    // relay receipt comes back; relayed again, the same answer.
    let good = header_from("9264003", &keys);
    let first = relay(&mut client, good.clone(), &ciphertext).await.unwrap();
    let again = relay(&mut client, good.clone(), &ciphertext).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.pack_id, good.pack_id);

    // A second pack would take B's schools past A's quota for them: refused
    // until A's school acknowledges (B's queue tries again later).
    let status = relay(&mut client, header_from("9264003", &keys), &ciphertext)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("quota"), "{status:?}");

    // Claiming to come from A's own school: refused.
    let status = relay(&mut client, header_from("8612001", &keys), &ciphertext)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not one that trust-b serves"),
        "{status:?}"
    );
    // A header altered after signing (another destination): refused.
    let mut altered = header_from("9264003", &keys);
    altered.created_at_ms = 2;
    let status = relay(&mut client, altered, &ciphertext).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("signature"), "{status:?}");
    // Sealed to a key A's school does not hold (the peer's own): refused.
    let status = relay(
        &mut client,
        header_from(
            "9264003",
            &[sender.keys_of(&sender.laestab).await[0].clone()],
        ),
        &ciphertext,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

    // A correction names a pack by id: it does not cross between trusts
    // (a peer could otherwise withdraw packs it never sent).
    let mut correction = header_from("9264003", &keys);
    correction.supersedes = good.pack_id.clone();
    let status = relay(&mut client, correction, &ciphertext)
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
        ),
        "{status:?}"
    );

    // A receipt for a pack A never relayed to B (the one B relayed to A):
    // refused, whoever signed it.
    let receipt = sender.receipt(&good);
    let status = client
        .return_receipt(v1::ReturnReceiptRequest {
            receipt: Some(receipt),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Only the good pack reached A's school.
    let inbox = primary.json(&["inbox", "--json"]).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["from"], "9264003");
    assert_eq!(audited(&a, "pack.relay.in").await.len(), 1);
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
