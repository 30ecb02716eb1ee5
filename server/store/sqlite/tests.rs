//! Unit tests of the SQLite store: staging, commit, retries, audit chain.
#![allow(clippy::unwrap_used)]

use baton::pack::{FORMAT_VERSION, Header, Kind};

use super::*;

fn header(id: PackId, byte: u8) -> SignedHeader {
    let header = Header {
        format_version: FORMAT_VERSION,
        pack_id: id,
        from: Laestab::parse("8612001").unwrap(),
        to: Laestab::parse("8612002").unwrap(),
        kind: Kind::Transfer,
        created_at_ms: 1,
        ciphertext_len: 3,
        ciphertext_sha256: [byte; 32],
        sender_key_id: KeyId::from_bytes([1; 16]),
        recipient_key_ids: vec![KeyId::from_bytes([2; 16])],
    };
    SignedHeader::from_parts(header, [0; 64]).unwrap()
}

fn event() -> audit::Event {
    audit::Event::by_admin("test", "x")
}

#[tokio::test]
async fn upload_is_invisible_until_committed_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
    let id = PackId::new();
    let h = header(id, 1);
    store.stage_chunk("u1", 0, b"ab").await.unwrap();
    assert!(store.pack(id).await.unwrap().is_none());
    let tail = vec![(1, b"c".to_vec())];
    let at = match store
        .commit_upload("u1", &h, b"h1", tail, 5, event())
        .await
        .unwrap()
    {
        Committed::Stored(at) => at,
        other => panic!("{other:?}"),
    };
    let pack = store.pack(id).await.unwrap().unwrap();
    assert_eq!(pack.chunks, 2);
    assert_eq!(store.chunk("u1", 0).await.unwrap(), b"ab");
    assert_eq!(store.chunk("u1", 1).await.unwrap(), b"c");

    store.stage_chunk("u2", 0, b"abc").await.unwrap();
    let again = store
        .commit_upload("u2", &h, b"h1", vec![], 6, event())
        .await
        .unwrap();
    assert_eq!(again, Committed::AlreadyStored(at));
    store.stage_chunk("u3", 0, b"xyz").await.unwrap();
    let other = store
        .commit_upload("u3", &header(id, 2), b"h2", vec![], 7, event())
        .await
        .unwrap();
    assert_eq!(other, Committed::Conflict);
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM pack_chunks WHERE upload_id != 'u1'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn staging_is_cleaned_and_the_audit_chain_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
    store.stage_chunk("u1", 0, b"ab").await.unwrap();
    store.stage_chunk("u1", 1, b"cd").await.unwrap();
    assert_eq!(store.clean_staging().await.unwrap(), 2);
    let school = NewSchool {
        laestab: Laestab::parse("8612001").unwrap(),
        name: "A".into(),
        phase: "primary".into(),
        urn: String::new(),
    };
    store
        .add_school(&school, [7; 32], 1, 10, event())
        .await
        .unwrap();
    assert!(matches!(
        store.add_school(&school, [8; 32], 1, 10, event()).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .revoke_tokens(&school.laestab, 2, event())
        .await
        .unwrap();
    let log = store.audit_log().await.unwrap();
    assert_eq!(audit::verify(&log), Ok(2));
}
