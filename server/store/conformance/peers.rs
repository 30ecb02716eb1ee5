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
    let event = || Event::by_admin("peer.remove", "north");
    assert!(store.remove_peer("north", 20, event()).await.unwrap());
    assert!(!store.remove_peer("north", 21, event()).await.unwrap());
    assert_eq!(store.peers().await.unwrap().len(), 1);
    assert_eq!(verified(store).await, 3);
}
