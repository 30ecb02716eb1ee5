//! The conformance suite of the [`Store`] trait: every case is an `async fn`
//! over any store, and [`suite!`] turns them into tests for one backend
//! (SQLite always, PostgreSQL when a test database URL is given).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use baton::Laestab;
use baton::keys::{KeyId, PublicKey, Role, SchoolKey};
use baton::pack::{FORMAT_VERSION, Header, Kind, PackId, SignedHeader};

use super::{Acknowledged, Committed, NewSchool, PackStatus, Store, StoreError};
use crate::audit;

mod lifecycle;
mod peers;
pub use lifecycle::{purges, withdrawals};
pub use peers::peers;

/// `8612001` and so on.
pub fn school_id(n: u16) -> Laestab {
    Laestab::parse(&format!("8612{n:03}")).unwrap()
}

/// A signed-looking header (the store never checks signatures).
pub fn header(id: PackId, from: Laestab, to: Laestab, byte: u8, len: u64) -> SignedHeader {
    let header = Header {
        format_version: FORMAT_VERSION,
        pack_id: id,
        from,
        to,
        kind: Kind::Transfer,
        created_at_ms: 1,
        ciphertext_len: len,
        ciphertext_sha256: [byte; 32],
        sender_key_id: KeyId::from_bytes([1; 16]),
        recipient_key_ids: vec![KeyId::from_bytes([2; 16])],
        left_on: Some(time::macros::date!(2026 - 07 - 22)),
        supersedes: None,
        forwarded: None,
    };
    SignedHeader::from_parts(header, [0; 64]).unwrap()
}

/// A well-formed key, different for each `n`.
pub fn key(n: u8) -> SchoolKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[n; 32]).verifying_key();
    let recipient = baton::bech32::encode("age", &[n; 32]);
    SchoolKey {
        public: PublicKey::new(&recipient, signing.as_bytes()).unwrap(),
        label: format!("key {n}"),
        roles: vec![Role::Dsl, Role::Staff],
        created_at_ms: 1,
        revoked_at_ms: None,
        endorsement: None,
        revocation: None,
    }
}

/// A staged chunk as the service stages them: [`CHUNK_BYTES`](super::CHUNK_BYTES)
/// long (every chunk of an upload but its last), starting with `tag`.
pub fn full(tag: &[u8]) -> bytes::Bytes {
    let mut chunk = tag.to_vec();
    chunk.resize(super::CHUNK_BYTES, b'.');
    chunk.into()
}

/// A short staged chunk (an upload's last) holding `data`.
pub fn last(data: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(data)
}

fn event() -> audit::Event {
    audit::Event::by_admin("test", "x")
}

fn school(n: u16) -> NewSchool {
    NewSchool {
        laestab: school_id(n),
        name: format!("School {n}"),
        phase: "primary".into(),
        urn: String::new(),
    }
}

/// The whole audit log, read from its stream.
pub async fn log(store: &impl Store) -> Vec<audit::Entry> {
    use tokio_stream::StreamExt as _;
    let mut out = Vec::new();
    let mut entries = store.audit_log();
    while let Some(entry) = entries.next().await {
        out.push(entry.unwrap());
    }
    out
}

async fn verified(store: &impl Store) -> u64 {
    audit::verify(&log(store).await).unwrap()
}

/// Stores a pack of `data` in one chunk under a fresh upload id.
async fn put(store: &impl Store, h: &SignedHeader, data: &[u8]) -> Committed {
    let upload = format!("u-{}", uuid::Uuid::now_v7().simple());
    store
        .stage_chunk(&upload, 0, bytes::Bytes::copy_from_slice(data))
        .await
        .unwrap();
    let bytes = h.header().pack_id.to_string().into_bytes();
    store
        .commit_upload(
            &upload,
            h,
            &bytes,
            vec![],
            super::now_ms(),
            event(),
            None,
            None,
        )
        .await
        .unwrap()
}

/// Staged chunks stay invisible; commits are idempotent; another pack with
/// the same id is a conflict.
pub async fn upload_visibility(store: &impl Store) {
    let id = PackId::new();
    let h = header(
        id,
        school_id(1),
        school_id(2),
        1,
        super::CHUNK_BYTES as u64 + 1,
    );
    store.stage_chunk("u1", 0, full(b"ab")).await.unwrap();
    assert!(store.pack(id).await.unwrap().is_none());
    assert!(
        store.chunk("u1", 0).await.is_err(),
        "a staged chunk is readable"
    );
    let tail = vec![(1, b"c".to_vec())];
    let Committed::Stored(at) = store
        .commit_upload("u1", &h, b"h1", tail, 5, event(), None, None)
        .await
        .unwrap()
    else {
        panic!("not stored")
    };
    let pack = store.pack(id).await.unwrap().unwrap();
    assert_eq!((pack.chunks, pack.status), (2, PackStatus::Pending));
    assert_eq!(store.chunk("u1", 0).await.unwrap(), full(b"ab"));
    assert_eq!(store.chunk("u1", 1).await.unwrap(), b"c");
    // A pack of several chunks is read for a download without them.
    let read = store.pack_for_download(id).await.unwrap().unwrap();
    assert_eq!((read.pack, read.chunk), (pack.clone(), None));
    assert_eq!(
        read.directory_version,
        store.directory_version().await.unwrap()
    );

    store.stage_chunk("u2", 0, full(b"abc")).await.unwrap();
    let again = store
        .commit_upload(
            "u2",
            &h,
            b"h1",
            vec![(1, b"c".to_vec())],
            6,
            event(),
            None,
            None,
        )
        .await;
    assert_eq!(again.unwrap(), Committed::AlreadyStored(at));
    assert!(store.chunk("u2", 0).await.is_err());
    store.stage_chunk("u3", 0, full(b"xyz")).await.unwrap();
    let other = header(id, school_id(1), school_id(2), 2, super::CHUNK_BYTES as u64);
    let other = store
        .commit_upload("u3", &other, b"h2", vec![], 7, event(), None, None)
        .await;
    assert_eq!(other.unwrap(), Committed::Conflict);
    store.stage_chunk("u4", 0, full(b"zz")).await.unwrap();
    store.discard_upload("u4").await.unwrap();
    assert!(store.chunk("u4", 0).await.is_err());
    assert_eq!(verified(store).await, 1);
}

/// A commit checked against another directory version stores nothing and
/// keeps its tail staged; committed again at the current version (with no
/// tail), the pack is stored whole.
pub async fn commit_against_a_moved_directory(store: &impl Store) {
    let now = store.directory_version().await.unwrap();
    let id = PackId::new();
    let h = header(
        id,
        school_id(1),
        school_id(2),
        1,
        super::CHUNK_BYTES as u64 + 1,
    );
    store.stage_chunk("m1", 0, full(b"ab")).await.unwrap();
    let tail = vec![(1, b"c".to_vec())];
    let moved = store
        .commit_upload("m1", &h, b"hm", tail, 5, event(), Some(now - 1), None)
        .await
        .unwrap();
    assert_eq!(moved, Committed::DirectoryMoved);
    assert!(store.pack(id).await.unwrap().is_none());
    assert!(store.chunk("m1", 1).await.is_err(), "the tail is staged");
    let stored = store
        .commit_upload("m1", &h, b"hm", vec![], 6, event(), Some(now), None)
        .await
        .unwrap();
    assert_eq!(stored, Committed::Stored(6));
    let pack = store.pack(id).await.unwrap().unwrap();
    assert_eq!(pack.chunks, 2);
    assert_eq!(store.chunk("m1", 0).await.unwrap(), full(b"ab"));
    assert_eq!(store.chunk("m1", 1).await.unwrap(), b"c");
    assert_eq!(verified(store).await, 1);
}

/// Enrolment: one school once, codes work once, tokens resolve and revoke.
pub async fn enrolment_and_tokens(store: &impl Store) {
    store
        .add_school(
            &school(1),
            [7; 32],
            &[Role::Dsl, Role::Staff],
            1,
            i64::MAX,
            event(),
        )
        .await
        .unwrap();
    let twice = store
        .add_school(
            &school(1),
            [8; 32],
            &[Role::Dsl, Role::Staff],
            1,
            i64::MAX,
            event(),
        )
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))));
    let bad = store
        .redeem(&school_id(1), [9; 32], &key(1), [1; 32], 2, event())
        .await;
    assert!(matches!(bad, Err(StoreError::BadCode)));
    let got = store
        .redeem(&school_id(1), [7; 32], &key(1), [1; 32], 2, event())
        .await
        .unwrap();
    assert_eq!(got.keys, vec![key(1)]);
    let reused = store
        .redeem(&school_id(1), [7; 32], &key(2), [2; 32], 3, event())
        .await;
    assert!(matches!(reused, Err(StoreError::BadCode)));
    assert_eq!(
        store.token_holder([1; 32]).await.unwrap().map(|h| h.school),
        Some(school_id(1))
    );
    let missing = store
        .issue_code(
            &school_id(9),
            [3; 32],
            &[Role::Dsl, Role::Staff],
            1,
            i64::MAX,
            event(),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    store
        .issue_code(
            &school_id(1),
            [3; 32],
            &[Role::Dsl, Role::Staff],
            1,
            i64::MAX,
            event(),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .revoke_tokens(&school_id(1), 4, event())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.token_holder([1; 32]).await.unwrap().map(|h| h.school),
        None
    );
    assert_eq!(store.list_schools().await.unwrap().len(), 1);
    assert_eq!(verified(store).await, 4);
}

/// Keys: added once, revoked idempotently, unknown ones are not found.
pub async fn keys(store: &impl Store) {
    store
        .add_school(
            &school(1),
            [7; 32],
            &[Role::Dsl, Role::Staff],
            1,
            i64::MAX,
            event(),
        )
        .await
        .unwrap();
    store
        .add_key(&school_id(1), &key(1), event())
        .await
        .unwrap();
    let again = store.add_key(&school_id(1), &key(1), event()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    let id = key(1).key_id();
    let revoked = store
        .revoke_key(&school_id(1), id, 10, None, event())
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(10));
    let twice = store
        .revoke_key(&school_id(1), id, 20, None, event())
        .await
        .unwrap();
    assert_eq!(twice.revoked_at_ms, Some(10));
    let unknown = store
        .revoke_key(&school_id(1), key(2).key_id(), 10, None, event())
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))));
    let school = store.school(&school_id(1)).await.unwrap().unwrap();
    assert_eq!(school.keys.len(), 1);
    assert_eq!(verified(store).await, 4);
}

/// The directory version moves with every change to schools, keys and
/// tokens, and not with uploads.
pub async fn directory_version_moves(store: &impl Store) {
    let mut last = store.directory_version().await.unwrap();
    macro_rules! moved {
        () => {{
            let now = store.directory_version().await.unwrap();
            let changed = now != last;
            last = now;
            changed
        }};
    }
    store
        .add_school(
            &school(1),
            [7; 32],
            &[Role::Dsl, Role::Staff],
            1,
            i64::MAX,
            event(),
        )
        .await
        .unwrap();
    assert!(moved!(), "school added");
    store
        .redeem(&school_id(1), [7; 32], &key(1), [1; 32], 2, event())
        .await
        .unwrap();
    assert!(moved!(), "code redeemed");
    store
        .add_key(&school_id(1), &key(2), event())
        .await
        .unwrap();
    assert!(moved!(), "key added");
    store
        .revoke_key(&school_id(1), key(2).key_id(), 3, None, event())
        .await
        .unwrap();
    assert!(moved!(), "key revoked");
    let h = header(PackId::new(), school_id(1), school_id(2), 1, 2);
    assert!(matches!(put(store, &h, b"ab").await, Committed::Stored(_)));
    assert!(!moved!(), "an upload is not a directory change");
    store
        .revoke_tokens(&school_id(1), 4, event())
        .await
        .unwrap();
    let now = store.directory_version().await.unwrap();
    assert_ne!(now, last, "tokens revoked");
}

/// Inbox and sent pages, downloads and receipts.
pub async fn inbox_sent_and_receipts(store: &impl Store) {
    let (a, b) = (school_id(1), school_id(2));
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = PackId::new();
        assert!(matches!(
            put(store, &header(id, a, b, i, 2), b"xy").await,
            Committed::Stored(_)
        ));
        ids.push(id);
    }
    let first = store.inbox(&b, 0, 3, event()).await.unwrap();
    assert!(first.more);
    assert_eq!(first.packs.len(), 3);
    let rest = store
        .inbox(&b, first.packs[2].seq, 3, event())
        .await
        .unwrap();
    assert!(!rest.more);
    assert_eq!(rest.packs.len(), 2);
    assert!(
        store
            .inbox(&a, 0, 10, event())
            .await
            .unwrap()
            .packs
            .is_empty()
    );

    store.mark_downloaded(ids[0], 50, event()).await.unwrap();
    // Marked again (a peer's two nodes reporting it at once): unchanged,
    // and not logged again.
    store.mark_downloaded(ids[0], 55, event()).await.unwrap();
    let p = store.pack(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.downloaded_at_ms),
        (PackStatus::Downloaded, Some(50))
    );
    assert_eq!(
        store.acknowledge(ids[0], b"r1", 60, event()).await.unwrap(),
        Acknowledged::At(60)
    );
    assert_eq!(
        store.acknowledge(ids[0], b"r1", 70, event()).await.unwrap(),
        Acknowledged::At(60)
    );
    assert_eq!(
        store.acknowledge(ids[0], b"r2", 70, event()).await.unwrap(),
        Acknowledged::Conflict
    );
    let gone = store.acknowledge(PackId::new(), b"r", 70, event()).await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))));
    let inbox = store.inbox(&b, 0, 10, event()).await.unwrap();
    assert_eq!(inbox.packs.len(), 4);

    let sent = store.sent(&a, i64::MAX, 10, event()).await.unwrap();
    assert_eq!(sent.packs.len(), 5);
    assert!(sent.packs.windows(2).all(|w| w[0].seq > w[1].seq));
    let acked = sent.packs.iter().find(|p| p.receipt.is_some()).unwrap();
    assert_eq!(acked.status, PackStatus::Acknowledged);
    // 5 uploads, 5 pages, 1 download, 1 receipt (logged when recorded: the
    // same one again is answered, not logged again; a conflict is not
    // recorded).
    assert_eq!(verified(store).await, 5 + 5 + 1 + 1);
}

/// A subscriber (after `listen`) hears of every pack stored from then on.
pub async fn arrivals_reach_subscribers(store: &impl Store) {
    store.listen().await.unwrap();
    let mut rx = store.subscribe();
    let id = PackId::new();
    let h = header(id, school_id(1), school_id(2), 3, 1);
    put(store, &h, b"z").await;
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no arrival within 10 s")
        .unwrap();
    assert_eq!(got.to, school_id(2));
    assert_eq!(got.header, id.to_string().into_bytes());
}

/// Many writers at once: one pack id committed by eight uploads is stored
/// once, acknowledgements race, and the audit chain stays one chain.
pub async fn concurrent_writers<S: Store>(store: Arc<S>) {
    let id = PackId::new();
    let h = header(id, school_id(1), school_id(2), 4, 2);
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (store, h) = (store.clone(), h.clone());
        tasks.push(tokio::spawn(async move {
            let mine = PackId::new();
            put(
                &*store,
                &header(mine, school_id(1), school_id(2), i, 2),
                b"ab",
            )
            .await;
            let same = put(&*store, &h, b"ab").await;
            let ack = store.acknowledge(mine, &[i], 9, event()).await.unwrap();
            let ack_same = store.acknowledge(id, &[i], 9, event()).await.unwrap();
            (same, ack, ack_same)
        }));
    }
    let mut stored = 0;
    let mut won = 0;
    for t in tasks {
        let (same, ack, ack_same) = t.await.unwrap();
        stored += usize::from(matches!(same, Committed::Stored(_)));
        assert!(matches!(ack, Acknowledged::At(_)));
        won += usize::from(matches!(ack_same, Acknowledged::At(_)));
    }
    assert_eq!((stored, won), (1, 1));
    let sent = store
        .sent(&school_id(1), i64::MAX, 100, event())
        .await
        .unwrap();
    assert_eq!(sent.packs.len(), 9);
    // 9 uploads (the 7 retries log nothing), 9 acknowledgements, 1 page.
    assert_eq!(verified(&*store).await, 9 + 9 + 1);
    // The groups settled every duplicate themselves: no fallback.
    assert_eq!(
        super::group::FALLBACKS.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A confirmed download in one write: only for the destination, with the
/// ciphertext it holds, of a kind the key may see, and only once.
pub async fn downloads_confirm_in_one_write(store: &impl Store) {
    let (id, cp) = (PackId::new(), PackId::new());
    let to = school_id(2);
    // Committed with its one chunk, as a small upload is: read for a
    // download with that chunk, in one query.
    let h = header(id, school_id(1), to, 7, 2);
    let tail = vec![(0, b"ok".to_vec())];
    let committed = store
        .commit_upload("small", &h, b"h", tail, 5, event(), None, None)
        .await
        .unwrap();
    assert!(matches!(committed, Committed::Stored(_)));
    let read = store.pack_for_download(id).await.unwrap().unwrap();
    assert_eq!(read.chunk.as_deref(), Some(&b"ok"[..]));
    let version = read.directory_version;
    let mut safeguarding = header(cp, school_id(1), to, 8, 2).header().clone();
    safeguarding.kind = Kind::Safeguarding;
    let safeguarding = SignedHeader::from_parts(safeguarding, [0; 64]).unwrap();
    assert!(matches!(
        put(store, &safeguarding, b"cp").await,
        Committed::Stored(_)
    ));
    let confirm = |id, to: Laestab, byte: u8, dsl| async move {
        store
            .confirm_download(id, &to, &[byte; 32], dsl, Some(version), 60, event())
            .await
            .unwrap()
    };
    // Not at another directory version than the caller was checked at.
    assert!(
        !store
            .confirm_download(id, &to, &[7; 32], true, Some(version - 1), 60, event())
            .await
            .unwrap()
    );
    assert!(!confirm(id, school_id(3), 7, true).await);
    assert!(!confirm(id, to, 9, true).await);
    assert!(!confirm(cp, to, 8, false).await);
    assert_eq!(
        store.pack(id).await.unwrap().unwrap().status,
        PackStatus::Pending
    );
    assert!(confirm(id, to, 7, false).await);
    assert!(confirm(cp, to, 8, true).await);
    let pack = store.pack(id).await.unwrap().unwrap();
    assert_eq!(
        (pack.status, pack.downloaded_at_ms),
        (PackStatus::Downloaded, Some(60))
    );
    assert!(!confirm(id, to, 7, false).await, "once");
    // Several packs in one read; ids not held are left out.
    let mut read = store.packs(&[cp, PackId::new(), id]).await.unwrap();
    read.sort_by_key(|(id, _)| *id);
    let mut want = vec![cp, id];
    want.sort();
    assert_eq!(read.iter().map(|(id, _)| *id).collect::<Vec<_>>(), want);
    assert_eq!(read.iter().find(|(i, _)| *i == id).unwrap().1, pack);
    assert!(store.packs(&[]).await.unwrap().is_empty());
}

/// Cleaning staged chunks on start never touches a committed pack, and a
/// discarded upload leaves nothing staged to commit.
pub async fn cleaning_keeps_committed_packs(store: &impl Store) {
    let id = PackId::new();
    let h = header(id, school_id(1), school_id(2), 3, 2);
    assert!(matches!(put(store, &h, b"ok").await, Committed::Stored(_)));
    let pack = store.pack(id).await.unwrap().unwrap();
    store.stage_chunk("gone", 0, full(b"xx")).await.unwrap();
    store.discard_upload("gone").await.unwrap();
    store.stage_chunk("left", 0, full(b"yy")).await.unwrap();
    store.clean_staging().await.unwrap();
    assert_eq!(store.chunk(&pack.upload_id, 0).await.unwrap(), b"ok");
    assert_eq!(store.pack(id).await.unwrap().unwrap(), pack);
    // Read for a download: its chunk with it if a row holds it (a staged
    // chunk is a file on SQLite).
    let read = store.pack_for_download(id).await.unwrap().unwrap();
    assert_eq!(read.pack, pack);
    assert!(read.chunk.is_none_or(|c| c == b"ok"));
    assert_eq!(store.pack_for_download(PackId::new()).await.unwrap(), None);
    // The discarded chunk is gone: the same upload id stages afresh.
    store.stage_chunk("gone", 0, full(b"zz")).await.unwrap();
    let other = header(
        PackId::new(),
        school_id(1),
        school_id(2),
        4,
        super::CHUNK_BYTES as u64,
    );
    let again = store
        .commit_upload("gone", &other, b"h", vec![], 9, event(), None, None)
        .await
        .unwrap();
    assert!(matches!(again, Committed::Stored(_)), "{again:?}");
    assert_eq!(store.chunk("gone", 0).await.unwrap(), full(b"zz"));
}

/// Every listing is in the audit log once it is answered, chained after
/// the writes, and concurrent listings are all there.
pub async fn listings_are_audited<S: Store>(store: Arc<S>) {
    let before = log(&*store).await.len();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20u16 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let school = school_id(n % 3 + 1);
            if n % 2 == 0 {
                store.inbox(&school, 0, 10, event()).await.unwrap();
            } else {
                store.sent(&school, i64::MAX, 10, event()).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let entries = log(&*store).await;
    assert_eq!(entries.len(), before + 20);
    assert_eq!(audit::verify(&entries).unwrap(), entries.len() as u64);
}

/// Rows as a database from before tokens had keys holds them: school 1
/// with keys 1 (enrolled first, with the token) and 2, and token `[1; 32]`.
/// Expands for either backend's pool (the statements are the same text).
macro_rules! seed_tokens_without_keys {
    ($pool:expr) => {{
        let school = $crate::store::conformance::school_id(1).to_string();
        sqlx::query(
            "INSERT INTO schools (laestab, name, phase, urn, created_at_ms) \
             VALUES ($1, 'A', 'primary', '', 1)",
        )
        .bind(&school)
        .execute($pool)
        .await
        .unwrap();
        for (n, at) in [(2u8, 20i64), (1, 10)] {
            let key = $crate::store::conformance::key(n);
            sqlx::query(
                "INSERT INTO keys (key_id, laestab, age_recipient, signing_key, label, roles, \
                 created_at_ms) VALUES ($1, $2, $3, $4, 'k', 'staff', $5)",
            )
            .bind(key.key_id().to_string())
            .bind(&school)
            .bind(key.public.age_recipient())
            .bind(key.public.signing_key_bytes().to_vec())
            .bind(at)
            .execute($pool)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO tokens (token_hash, laestab, created_at_ms) VALUES ($1, $2, 10)")
            .bind(vec![1u8; 32])
            .bind(&school)
            .execute($pool)
            .await
            .unwrap();
    }};
}
pub(crate) use seed_tokens_without_keys;

/// After the migration, the token seeded by [`seed_tokens_without_keys`]
/// belongs to its school's first key: revoking the other key leaves it,
/// revoking the first revokes it.
pub async fn tokens_without_keys_are_bound_to_the_first_key(store: &impl Store) {
    let school = school_id(1);
    assert_eq!(
        store.token_holder([1; 32]).await.unwrap().map(|h| h.school),
        Some(school)
    );
    store
        .revoke_key(&school, key(2).key_id(), 30, None, event())
        .await
        .unwrap();
    assert_eq!(
        store.token_holder([1; 32]).await.unwrap().map(|h| h.school),
        Some(school)
    );
    store
        .revoke_key(&school, key(1).key_id(), 40, None, event())
        .await
        .unwrap();
    assert_eq!(
        store.token_holder([1; 32]).await.unwrap().map(|h| h.school),
        None
    );
}

/// Declares one `#[tokio::test]` per conformance case. `$open` is an async
/// fn returning `Option<(S, guard)>`; `None` means skipped.
macro_rules! suite {
    ($open:path) => {
        #[tokio::test]
        async fn conformance_peers() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::peers(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_upload_visibility() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::upload_visibility(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_enrolment_and_tokens() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::enrolment_and_tokens(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_keys() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::keys(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_commit_against_a_moved_directory() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::commit_against_a_moved_directory(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_directory_version_moves() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::directory_version_moves(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_inbox_sent_and_receipts() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::inbox_sent_and_receipts(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_arrivals_reach_subscribers() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::arrivals_reach_subscribers(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_cleaning_keeps_committed_packs() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::cleaning_keeps_committed_packs(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_downloads_confirm_in_one_write() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::downloads_confirm_in_one_write(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_withdrawals() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::withdrawals(&s).await;
            }
        }
        #[tokio::test]
        async fn conformance_purges() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::purges(&s).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn conformance_listings_are_audited() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::listings_are_audited(std::sync::Arc::new(s)).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn conformance_concurrent_writers() {
            if let Some((s, _g)) = $open().await {
                $crate::store::conformance::concurrent_writers(std::sync::Arc::new(s)).await;
            }
        }
    };
}
pub(crate) use suite;
