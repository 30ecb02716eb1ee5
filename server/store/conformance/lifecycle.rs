//! Conformance cases of [`Lifecycle`](crate::store::Lifecycle): withdrawing
//! and purging packs, the same on both backends.

use baton::pack::PackId;

use super::{event, header, put, school_id, verified};
use crate::store::{Cutoffs, PackStatus, Store, Withdrawal, Withdrawn};

/// Chunks of a pack still stored.
async fn chunks_left(store: &impl Store, id: PackId) -> usize {
    let p = store.pack(id).await.unwrap().unwrap();
    let mut n = 0;
    for idx in 0..p.chunks {
        if store.chunk(&p.upload_id, idx).await.is_ok() {
            n += 1;
        }
    }
    n
}

/// A recall before download deletes and hides the pack; after download it
/// keeps the state and records the notice; repeats keep the first; a
/// superseded pack cannot be recalled; a supersede links both ways.
pub async fn withdrawals(store: &impl Store) {
    let (a, b) = (school_id(1), school_id(2));
    let (early, late, fixed, fix) = (PackId::new(), PackId::new(), PackId::new(), PackId::new());
    for (i, id) in [early, late, fixed, fix].into_iter().enumerate() {
        put(store, &header(id, a, b, i as u8, 4), b"data").await;
    }
    store.mark_downloaded(late, 10, event()).await.unwrap();

    let w = store
        .withdraw(early, Withdrawal::Recall(b"r1"), 20, event())
        .await
        .unwrap();
    assert_eq!(w, Withdrawn::BeforeDownload(20));
    let p = store.pack(early).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.recall.as_deref()),
        (PackStatus::Recalled, Some(&b"r1"[..]))
    );
    assert_eq!(chunks_left(store, early).await, 0);
    // Again, with another recall: the first stands.
    let w = store
        .withdraw(early, Withdrawal::Recall(b"r2"), 30, event())
        .await
        .unwrap();
    assert_eq!(w, Withdrawn::BeforeDownload(20));
    assert_eq!(
        store.pack(early).await.unwrap().unwrap().recall.as_deref(),
        Some(&b"r1"[..])
    );

    let w = store
        .withdraw(late, Withdrawal::Recall(b"r3"), 40, event())
        .await
        .unwrap();
    assert_eq!(w, Withdrawn::AfterDownload(40));
    let p = store.pack(late).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.deleted_at_ms),
        (PackStatus::Downloaded, Some(40))
    );
    assert_eq!(chunks_left(store, late).await, 0);
    // Still listed to the destination, as a notice.
    let inbox = store.inbox(&b, 0, 10, event()).await.unwrap();
    assert!(inbox.packs.iter().any(|p| p.recalled_at_ms == Some(40)));
    assert!(inbox.packs.iter().all(|p| p.status != PackStatus::Recalled));

    let w = store
        .withdraw(fixed, Withdrawal::Supersede(fix), 50, event())
        .await
        .unwrap();
    assert_eq!(w, Withdrawn::BeforeDownload(50));
    assert_eq!(
        store.pack(fixed).await.unwrap().unwrap().superseded_by,
        Some(fix)
    );
    let w = store
        .withdraw(fixed, Withdrawal::Recall(b"r4"), 60, event())
        .await
        .unwrap();
    assert_eq!(w, Withdrawn::Superseded(fix));
    assert_eq!(chunks_left(store, fix).await, 1);
    assert!(
        store
            .withdraw(PackId::new(), Withdrawal::Recall(b"r"), 1, event())
            .await
            .is_err()
    );
    // One audit entry each for the uploads and the three withdrawals.
    assert_eq!(verified(store).await, 4 + 1 + 3 + 1);
}

/// Retention purges what its cut-offs say and nothing else, re-reading
/// each pack under lock: a pack acknowledged since it was listed stays.
pub async fn purges(store: &impl Store) {
    let (a, b) = (school_id(1), school_id(2));
    let (acked, waiting, fresh) = (PackId::new(), PackId::new(), PackId::new());
    for (i, id) in [acked, waiting, fresh].into_iter().enumerate() {
        put(store, &header(id, a, b, i as u8, 4), b"data").await;
    }
    store
        .acknowledge(acked, b"receipt", 100, event())
        .await
        .unwrap();
    let now = crate::store::now_ms();
    let cutoffs = Cutoffs {
        acknowledged_before_ms: 101,
        uploaded_before_ms: now + 1,
    };
    let listed: Vec<_> = store.purge_candidates(cutoffs).await.unwrap();
    assert_eq!(listed.len(), 3);
    // Acknowledged after it was listed, with a receipt time past the cut-off.
    store
        .acknowledge(fresh, b"receipt", 500, event())
        .await
        .unwrap();
    assert_eq!(
        store.purge(acked, cutoffs, now, "admin").await.unwrap(),
        Some("acknowledged")
    );
    assert_eq!(
        store.purge(waiting, cutoffs, now, "admin").await.unwrap(),
        Some("not collected")
    );
    assert_eq!(
        store.purge(fresh, cutoffs, now, "admin").await.unwrap(),
        None
    );
    // A second purge of the same pack does nothing.
    assert_eq!(
        store.purge(acked, cutoffs, now, "admin").await.unwrap(),
        None
    );
    let p = store.pack(acked).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.receipt.as_deref()),
        (PackStatus::Purged, Some(&b"receipt"[..]))
    );
    assert_eq!(chunks_left(store, acked).await, 0);
    assert_eq!(chunks_left(store, fresh).await, 1);
    let log = super::log(store).await;
    let purged: Vec<_> = log.iter().filter(|e| e.action == "pack.purge").collect();
    assert_eq!(purged.len(), 2);
    assert!(
        purged
            .iter()
            .any(|e| e.subject.starts_with(&acked.to_string())
                && e.subject.ends_with("reason=acknowledged"))
    );
    assert!(store.reclaim().await.unwrap());
    verified(store).await;
}
