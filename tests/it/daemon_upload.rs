//! Uploads: streaming, atomic visibility, idempotent retries, conflicts and
//! every refusal the daemon makes before or while receiving a pack.
use crate::common;

use baton::api::v1;
use baton::crypto::Identity;
use baton::keys::Role;
use baton::pack::PackId;
use common::{Daemon, ciphertext, key_and_proof, upload_messages};
use tonic::Code;

#[tokio::test]
async fn killed_upload_leaves_nothing_behind() {
    let daemon = Daemon::start(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(3 * 1024 * 1024);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));

    // Send the header and two 1 MiB chunks, then break the stream.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut msgs = upload_messages(&header, &data, 1024 * 1024).into_iter();
    let mut exchange = a.exchange();
    let req = a.req(tokio_stream::wrappers::ReceiverStream::new(rx));
    let call = tokio::spawn(async move { exchange.upload(req).await });
    for _ in 0..3 {
        tx.send(msgs.next().unwrap()).await.unwrap();
    }
    // Wait until the server has staged the first chunk, then abort the call.
    let db = common::open_db(&daemon.db_path()).await;
    // Chunk rows, or (SQLite, a pack of a chunk or more) ciphertext files.
    let held = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks")
            .fetch_one(&db)
            .await
            .unwrap();
        let (staged, held) = crate::common::ciphertext_files(&daemon.data);
        n + (staged + held) as i64
    };
    while held().await == 0 {
        tokio::task::yield_now().await;
    }
    call.abort();
    drop(tx);
    let _ = call.await;

    // The daemon notices the broken stream and removes the staged chunks.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = held().await;
        if n == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} orphaned chunks"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let inbox = b
        .exchange()
        .inbox(b.req(v1::InboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(inbox.packs.is_empty());
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM packs")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // The same pack uploads fine afterwards, and downloads byte for byte.
    let done = a.upload(&header, &data, 256 * 1024).await.unwrap();
    assert!(!done.already_stored);
    let (got_header, got) = b.download(&header.pack_id).await.unwrap();
    assert_eq!(got_header, header);
    assert!(got == data);
}

#[tokio::test]
async fn retries_conflicts_and_refusals() {
    let daemon = Daemon::start(&["--max-pack-bytes", "100000"]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(20_000);
    let id = PackId::new();
    let header = v1::PackHeader::from(&a.header_with(id, &b.laestab, &keys, &data));

    let first = a.upload(&header, &data, 8192).await.unwrap();
    assert!(!first.already_stored);
    let again = a.upload(&header, &data, 4096).await.unwrap();
    assert!(again.already_stored);
    assert_eq!(again.uploaded_at_ms, first.uploaded_at_ms);

    // Same id, other content.
    let other = ciphertext(20_000);
    let conflicting = v1::PackHeader::from(&a.header_with(id, &b.laestab, &keys, &other));
    let err = a.upload(&conflicting, &other, 8192).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Larger than the server accepts: refused on the header alone.
    let big = ciphertext(150_000);
    let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &big));
    assert_eq!(
        a.upload(&h, &big, 65536).await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    // Wrong signature.
    let mut h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    h.signature[0] ^= 1;
    assert_eq!(
        a.upload(&h, &data, 8192).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Signed by a key of another school.
    let mut h = v1::PackHeader::from(&b.header_for(&b.laestab, &keys, &data));
    h.from = a.laestab.to_string();
    assert_eq!(
        a.upload(&h, &data, 8192).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // from ≠ caller.
    let a_keys = b.keys_of(&a.laestab).await;
    let h = v1::PackHeader::from(&b.header_for(&a.laestab, &a_keys, &data));
    assert_eq!(
        a.upload(&h, &data, 8192).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Length or hash mismatch.
    let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    assert_eq!(
        a.upload(&h, &data[..10_000], 8192)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut tampered = data.clone();
    tampered[5] ^= 1;
    assert_eq!(
        a.upload(&h, &tampered, 8192).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Chunk before header; header twice.
    use v1::upload_request::Part;
    let msgs = vec![v1::UploadRequest {
        part: Some(Part::Chunk(data.clone().into())),
    }];
    let err = a
        .exchange()
        .upload(a.req(tokio_stream::iter(msgs)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut msgs = upload_messages(&h, &data, 8192);
    msgs.insert(
        2,
        v1::UploadRequest {
            part: Some(Part::Header(h.clone())),
        },
    );
    let err = a
        .exchange()
        .upload(a.req(tokio_stream::iter(msgs)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Unknown destination.
    let nowhere = baton::Laestab::parse("9999999").unwrap();
    let h = v1::PackHeader::from(&a.header_for(&nowhere, &keys, &data));
    assert_eq!(
        a.upload(&h, &data, 8192).await.unwrap_err().code(),
        Code::NotFound
    );

    // Stale recipient set: the destination added a key after sealing.
    let stale = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    let (key, proof) = key_and_proof(&b.laestab, &Identity::generate(), &[Role::Staff]);
    let add = v1::AddKeyRequest {
        laestab: b.laestab.to_string(),
        key: Some(key),
        proof,
    };
    b.directory().add_key(b.req(add)).await.unwrap();
    let err = a.upload(&stale, &data, 8192).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // A retry of the pack stored before the key change still succeeds.
    assert!(a.upload(&header, &data, 8192).await.unwrap().already_stored);

    // Nothing but the one good pack is visible, and no chunk is orphaned.
    let inbox = b
        .exchange()
        .inbox(b.req(v1::InboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.packs.len(), 1);
    let db = common::open_db(&daemon.db_path()).await;
    let (staged,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks WHERE staged = 1")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(staged, 0);
}

#[tokio::test]
async fn inbox_pages() {
    let daemon = Daemon::start(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
    let mut sent = Vec::new();
    for _ in 0..5 {
        let data = ciphertext(500);
        let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        a.upload(&h, &data, 500).await.unwrap();
        sent.push(h.pack_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = b
            .exchange()
            .inbox(b.req(v1::InboxRequest {
                page_size: 2,
                page_token: token.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.packs.len() <= 2);
        seen.extend(page.packs.into_iter().map(|p| p.header.unwrap().pack_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, sent);
    let bad = b
        .exchange()
        .inbox(b.req(v1::InboxRequest {
            page_size: 2,
            page_token: "zz".into(),
        }))
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
}

/// The daemon caches the directory; a pack sealed to a key the destination
/// added a moment ago is accepted even though nothing has refreshed that
/// cache in between (a refusal against the cache is checked again against
/// the directory as it is).
#[tokio::test]
async fn a_key_added_since_the_cache_was_filled_is_seen_at_once() {
    let daemon = Daemon::start(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let mut keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(20_000);
    let first = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    assert!(!a.upload(&first, &data, 8192).await.unwrap().already_stored);

    let (key, proof) = key_and_proof(&b.laestab, &Identity::generate(), &[Role::Staff]);
    keys.push(baton::keys::SchoolKey::try_from(&key).unwrap());
    let add = v1::AddKeyRequest {
        laestab: b.laestab.to_string(),
        key: Some(key),
        proof,
    };
    b.directory().add_key(b.req(add)).await.unwrap();
    let current = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    let done = a.upload(&current, &data, 8192).await;
    assert!(!done.unwrap().already_stored);
}

/// The daemon checks the signatures of uploads that arrive together in
/// one batch: a bad one among good ones fails alone, with the answer it
/// gets alone, and every good one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_among_concurrent_uploads_fail_alone() {
    let daemon = Daemon::start(&[]).await;
    // Two senders, each with as many uploads open as a school may have.
    let senders = [daemon.enrol("8612001").await, daemon.enrol("8612003").await];
    let b = daemon.enrol("8612002").await;
    let keys = senders[0].keys_of(&b.laestab).await;
    let bad = |i: usize| i % 8 == 3;
    let uploads: Vec<(usize, v1::PackHeader, Vec<u8>)> = (0..32)
        .map(|i| {
            let data = ciphertext(2000 + i);
            let sender = &senders[i % 2];
            let mut h = v1::PackHeader::from(&sender.header_for(&b.laestab, &keys, &data));
            if bad(i) {
                h.signature[10] ^= 4;
            }
            (i % 2, h, data)
        })
        .collect();
    let answers = futures::future::join_all(
        uploads
            .iter()
            .map(|(s, h, data)| senders[*s].upload(h, data, 8192)),
    )
    .await;
    for (i, answer) in answers.iter().enumerate() {
        if bad(i) {
            let err = answer.as_ref().unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "upload {i}: {err:?}");
            assert!(err.message().contains("header.signature"), "{err:?}");
        } else {
            assert!(answer.is_ok(), "upload {i}: {answer:?}");
        }
    }
    let inbox = b
        .exchange()
        .inbox(b.req(v1::InboxRequest {
            page_size: 100,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut listed: Vec<String> = inbox
        .packs
        .into_iter()
        .map(|p| p.header.unwrap().pack_id)
        .collect();
    let mut good: Vec<String> = uploads
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad(*i))
        .map(|(_, (_, h, _))| h.pack_id.clone())
        .collect();
    listed.sort();
    good.sort();
    assert_eq!(listed, good);
}
