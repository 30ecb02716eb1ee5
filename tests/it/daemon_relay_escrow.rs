//! Issue 23, item 2's escrow: a pupil whose next school was unknown turns
//! up at another trust's school. Trust A's escrow re-addresses the pack it
//! holds to trust B's school; A's daemon relays it; B's daemon checks the
//! forwarding against A's escrow as A lists it and the original against
//! A's school; B's school verifies both against its pins (A's escrow
//! pinned apart from B's own), opens, acknowledges; the original sender
//! sees the receipt. B's own escrow never sees the pack as its own, and a
//! hostile A cannot pass off a forwarding its escrow did not sign, nor an
//! original its school did not.

use sha2::Digest as _;

use crate::client_escrow::{enrol_escrow, journal_header};
use crate::client_lifecycle::sent;
use crate::common::Daemon;
use crate::common::reliability::{assert_daemon_holds_no_plaintext, distinctive_record, needles};
use crate::daemon_federation::{audited, listed_until, stdout, two_trusts};
use crate::daemon_relay_hostile::{as_peer, relay};

/// Waits (up to 20 s) until `daemon`'s `peer list --json` says `peer`
/// listed its escrow.
async fn escrow_listed(daemon: &Daemon, peer: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = daemon.admin(&["admin", "peer", "list", "--json"]).await;
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let found = listed
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == peer && p["escrow"] == true);
        if found {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{peer}'s escrow never listed: {}",
            stdout(&out)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn issue23_an_escrow_readdresses_to_another_trusts_school() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b, primary, secondary) = two_trusts(root.path()).await;
    let escrow_a = enrol_escrow(&a, root.path(), &["dsl", "staff"]).await;
    let escrow_b = enrol_escrow(&b, root.path(), &["dsl"]).await;
    escrow_listed(&b, "trust-a").await;
    let text = stdout(&b.admin(&["admin", "peer", "list"]).await);
    assert!(text.contains("and its escrow"), "{text}");
    // Neither escrow is a destination for the other trust's schools: B's
    // schools still see one school of A's.
    let listed = secondary.json(&["schools", "--json"]).await;
    let escrows: Vec<_> = listed
        .iter()
        .filter(|s| s["laestab"] == "XXXXXXX")
        .collect();
    assert_eq!(escrows.len(), 1, "{listed:?}");
    assert!(escrows[0]["peer"].is_null(), "{listed:?}");
    // The teacher's page says which trust serves each school.
    let page = crate::client_ui::signed_in_page(&secondary, "/schools").await;
    assert!(page.contains("another trust (trust-a)"), "{page}");
    assert!(page.contains("your trust"), "{page}");

    // A's primary sends two pupils whose next school it does not know.
    let (lost, mistaken) = (
        distinctive_record("Crossing", 2301, 1),
        distinctive_record("Mistaken", 2301, 2),
    );
    for record in [&lost, &mistaken] {
        let dir = root.path().join(&record.upn);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
        primary
            .ok(&["send", "--to", "XXXXXXX", &dir.display().to_string()])
            .await;
    }
    let held = escrow_a.json(&["inbox", "--json"]).await;
    assert_eq!(held.len(), 2, "{held:?}");
    // Oldest first: as sent.
    let id_of = |i: usize| held[i]["id"].as_str().unwrap().to_string();
    let (original_id, mistaken_id) = (id_of(0), id_of(1));

    // The pupils joined B's secondary, A's escrow thinks: it re-addresses
    // both packs.
    for id in [&original_id, &mistaken_id] {
        let said = escrow_a.ok(&["readdress", id, "--to", "9264002"]).await;
        assert!(said.contains("re-addressed to 9264002"), "{said}");
    }
    // B's school sees who wrote them and who forwarded them.
    let inbox = listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 2).await;
    for e in &inbox {
        assert_eq!(e["from"], "8612001", "{inbox:?}");
        assert_eq!(e["via"], "XXXXXXX", "{inbox:?}");
    }
    // One was a mistake: A's escrow recalls its forwarding, and B's daemon
    // withdraws it (checked against A's escrow's keys).
    let forwarded = escrow_a.json(&["sent", "--json"]).await;
    let forwarding_of = |upn: &str| {
        forwarded
            .iter()
            .find(|e| e["upn"] == upn)
            .unwrap_or_else(|| panic!("{forwarded:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    escrow_a
        .ok(&["recall", &forwarding_of(&mistaken.upn)])
        .await;
    let inbox = listed_until(&secondary, &["inbox", "--json"], |l| l.len() == 1).await;
    assert_eq!(
        inbox[0]["id"],
        forwarding_of(&lost.upn).as_str(),
        "{inbox:?}"
    );
    assert_eq!(
        audited(&b, "pack.recall").await,
        [("peer:trust-a".to_string(), "pack.recall".to_string())]
    );

    // B's school pulls the other, verifies both signatures, acknowledges.
    let received = root.path().join("received");
    secondary
        .ok(&["pull", "--all", "--out", &received.display().to_string()])
        .await;
    let pack: serde_json::Value = serde_json::from_slice(
        &std::fs::read(received.join("8612001").join(&lost.upn).join("pack.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pack["from"], "8612001", "{pack}");
    assert_eq!(pack["via"], "XXXXXXX@trust-a", "{pack}");
    assert_eq!(pack["original_id"], original_id.as_str(), "{pack}");
    assert_eq!(pack["verified"], true, "{pack}");
    // A's escrow is pinned apart from B's own, and shown as A's.
    let shown = secondary
        .json_value(&["schools", "show", "XXXXXXX", "--peer", "trust-a", "--json"])
        .await;
    assert_eq!(shown["peer"], "trust-a", "{shown}");
    assert_eq!(shown["pin"], "matches the pinned keys", "{shown}");
    let pins: serde_json::Value =
        serde_json::from_slice(&std::fs::read(secondary.dir.join("pins.json")).unwrap()).unwrap();
    assert!(pins["schools"]["XXXXXXX@trust-a"].is_object(), "{pins}");
    secondary.ok(&["ack", "--all-pulled"]).await;

    // The original sender sees where it went and the verified receipt; A's
    // escrow sees its forwarding acknowledged.
    listed_until(&primary, &["sent", "--json"], |l| {
        l.iter().any(|e| {
            e["id"] == original_id.as_str()
                && e["state"] == "readdressed"
                && e["readdressed_to"] == "9264002"
                && e["receipt_verified"] == true
        })
    })
    .await;
    listed_until(&escrow_a, &["sent", "--json"], |l| {
        l.iter().any(|e| {
            e["upn"] == lost.upn.as_str()
                && e["state"] == "acknowledged"
                && e["receipt_verified"] == true
        })
    })
    .await;
    // B's own escrow never sees A's forwarding as its own.
    assert!(sent(&escrow_b).await.is_empty());
    assert!(escrow_b.json(&["inbox", "--json"]).await.is_empty());
    assert_eq!(
        audited(&b, "pack.relay.in").await,
        vec![("peer:trust-a".to_string(), "pack.relay.in".to_string()); 2]
    );
    for daemon in [&a, &b] {
        assert_daemon_holds_no_plaintext(daemon, &[needles(&lost), needles(&mistaken)].concat());
    }

    hostile_forwardings(&a, &mut b, &primary, &escrow_a, &original_id).await;
}

/// What A's daemon (or a thief of its disk) cannot relay to B as its
/// escrow's: a forwarding signed by another key of A's, one claiming to
/// come from a school, one whose original A's school did not sign, one
/// whose original was never held in escrow. Each refused by B's daemon;
/// B's school's inbox stays as it was.
async fn hostile_forwardings(
    a: &Daemon,
    b: &mut Daemon,
    primary: &crate::common::cli::Home,
    escrow: &crate::common::cli::Home,
    original_id: &str,
) {
    use baton::api::v1;
    use baton::pack::{FORMAT_VERSION, Forwarded, Header, Kind, PackId, SignedHeader};
    let identity = |home: &crate::common::cli::Home| {
        baton::crypto::Identity::from_file_bytes(
            &std::fs::read(home.dir.join("identity.txt")).unwrap(),
            None,
        )
        .unwrap()
    };
    let (escrow_key, school_key) = (identity(escrow), identity(primary));
    let original = journal_header(primary, original_id);
    let secondary = b.enrol("9264003").await;
    let keys = secondary.keys_of(&"9264003".parse().unwrap()).await;
    let data = crate::common::ciphertext(1000);
    let forwarding = |signer: &baton::crypto::Identity, from: &str, original: &SignedHeader| {
        let signed = signer
            .sign_header(Header {
                format_version: FORMAT_VERSION,
                pack_id: PackId::new(),
                from: from.parse().unwrap(),
                to: "9264003".parse().unwrap(),
                kind: Kind::Transfer,
                created_at_ms: 1,
                ciphertext_len: data.len() as u64,
                ciphertext_sha256: sha2::Sha256::digest(&data).into(),
                sender_key_id: signer.key_id(),
                recipient_key_ids: keys.iter().map(|k| k.key_id()).collect(),
                left_on: original.header().left_on,
                supersedes: None,
                forwarded: Some(Forwarded {
                    original: Box::new(original.clone()),
                    original_age_header: b"age-encryption.org/v1\n".to_vec(),
                }),
            })
            .unwrap();
        v1::PackHeader::from(&signed)
    };
    // An original as A's school would sign it, but never held in escrow.
    let mut unheld = original.header().clone();
    unheld.to = "9264002".parse().unwrap();
    let unheld = school_key.sign_header(unheld).unwrap();
    // An original A's school did not sign (the escrow's key did).
    let mut unsigned = original.header().clone();
    unsigned.sender_key_id = escrow_key.key_id();
    let unsigned = escrow_key.sign_header(unsigned).unwrap();

    // A pack of B's own (between two of its schools), whose id A learns.
    let local = crate::common::ciphertext(500);
    let to_oak: baton::Laestab = "9264002".parse().unwrap();
    let local_header = v1::PackHeader::from(&secondary.header_for(
        &to_oak,
        &secondary.keys_of(&to_oak).await,
        &local,
    ));
    secondary.upload(&local_header, &local, 256).await.unwrap();
    // An "original" A's school signs with that id, held in no escrow.
    let mut claimed = original.header().clone();
    claimed.pack_id = local_header.pack_id.parse().unwrap();
    let claimed = school_key.sign_header(claimed).unwrap();

    let mut client = as_peer(a, b).await;
    for (header, code, says) in [
        (
            forwarding(&school_key, "XXXXXXX", &original),
            tonic::Code::PermissionDenied,
            "not an active key of trust-a's escrow",
        ),
        (
            forwarding(&school_key, "8612001", &original),
            tonic::Code::PermissionDenied,
            "only a trust's escrow",
        ),
        (
            forwarding(&escrow_key, "XXXXXXX", &unsigned),
            tonic::Code::PermissionDenied,
            "not a key of school 8612001 that was active",
        ),
        (
            forwarding(&escrow_key, "XXXXXXX", &unheld),
            tonic::Code::InvalidArgument,
            "not held in escrow",
        ),
    ] {
        let status = relay(&mut client, header, &data).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    let inbox = || async {
        secondary
            .exchange()
            .inbox(secondary.req(v1::InboxRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .packs
    };
    assert!(inbox().await.is_empty());
    // The same forwarding, signed by A's escrow: B's daemon takes it (its
    // school's client then checks the record against the original, which
    // this one, made of random bytes, would fail). So does it one naming
    // B's own pack as its original; but B never takes that for one its
    // escrow re-addressed (B's hourly run, also run at start, links a
    // forwarding to the pack it forwards only within one trust).
    for original in [&original, &claimed] {
        relay(
            &mut client,
            forwarding(&escrow_key, "XXXXXXX", original),
            &data,
        )
        .await
        .unwrap();
    }
    assert_eq!(inbox().await.len(), 2);
    let fed = b.printed("federation on https://").await;
    b.kill9().await;
    b.restart(&["--federation-listen", &fed, "--federation-sync-secs", "1"])
        .await;
    // Once its start-up run (the hourly one) is done.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&b.log)
        .unwrap()
        .matches("retention's start-up run done")
        .count()
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "no start-up run");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pool = crate::common::open_db(&b.db_path()).await;
    let (status, readdressed): (String, Option<String>) =
        sqlx::query_as("SELECT status, readdressed_as FROM packs WHERE pack_id = $1")
            .bind(&local_header.pack_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!((status.as_str(), readdressed), ("pending", None));
    assert!(audited(b, "pack.readdress").await.is_empty());
}
