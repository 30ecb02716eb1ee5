//! Conformance cases of [`Peers`](crate::store::Peers): adding, listing and
//! removing federation peers, audited, the same on both backends.

use super::verified;
use crate::audit::Event;
use crate::store::{Peer, Store, StoreError};

fn peer(name: &str, key: u8) -> Peer {
    Peer {
        name: name.to_string(),
        url: format!("https://{name}.example:50052"),
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        ca_cert_sha256: [key ^ 0xff; 32],
        daemon_key: [key; 32],
        valid_until_ms: 1_000,
        added_at_ms: 10,
        la_codes: vec!["861".into(), "926".into()],
    }
}

/// A peer is added once by name and once by key, listed by name, removed
/// once; each change is one audit entry.
pub async fn peers(store: &impl Store) {
    let north = peer("north", 1);
    store
        .add_peer(&north, Event::by_admin("peer.add", "north"))
        .await
        .unwrap();
    store
        .add_peer(&peer("east", 2), Event::by_admin("peer.add", "east"))
        .await
        .unwrap();
    // The same name, or the same daemon key under another name: refused.
    for twin in [peer("north", 3), peer("west", 1)] {
        let refused = store
            .add_peer(&twin, Event::by_admin("peer.add", "x"))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }
    let listed = store.peers().await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["east", "north"]
    );
    assert_eq!(listed[1], north);

    // A peer's directory: replaced whole, kept through a failed sync,
    // dropped with the peer; a removed peer's sync writes nothing.
    let school = |n: &str| (n.to_string(), n.as_bytes().to_vec());
    assert!(
        store
            .replace_peer_schools("north", &[school("1112222"), school("1113333")], 11)
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_peer_schools("north", &[school("1113333"), school("XXXXXXX")], 12)
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_peer_schools("south", &[school("1114444")], 12)
            .await
            .unwrap()
    );
    store
        .peer_sync_failed("north", "connection refused", 13)
        .await
        .unwrap();
    let held = store.peer_schools().await.unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(
        (held[0].peer.as_str(), held[0].laestab.as_str()),
        ("north", "1113333")
    );
    assert_eq!(held[0].school, b"1113333");
    assert_eq!(held[1].laestab, "XXXXXXX");
    let syncs = store.peer_syncs().await.unwrap();
    assert_eq!(syncs.len(), 2);
    assert_eq!(syncs[0].name, "east");
    assert_eq!(syncs[0].synced_at_ms, None);
    assert_eq!(
        (
            syncs[1].synced_at_ms,
            syncs[1].tried_at_ms,
            syncs[1].error.as_deref(),
            syncs[1].schools,
            syncs[1].escrow
        ),
        (Some(12), Some(13), Some("connection refused"), 1, true),
        "its escrow is not counted as a school"
    );
    assert!(!syncs[0].escrow);

    let event = || Event::by_admin("peer.remove", "north");
    assert!(store.remove_peer("north", 20, event()).await.unwrap());
    assert!(store.peer_schools().await.unwrap().is_empty());
    assert!(!store.remove_peer("north", 21, event()).await.unwrap());
    assert_eq!(store.peers().await.unwrap().len(), 1);
    assert_eq!(verified(store).await, 3);
}
