//! `DownloadMany`: small packs many to a call, answered one message a
//! requested id in the request's order, each exactly as `Download` would
//! serve it or refuse it.
use crate::common;

use baton::api::v1;
use baton::keys::SchoolKey;
use baton::pack::PackId;
use common::{Daemon, School};
use tonic::Code;

/// The largest chunk an upload sends (the server's chunk size).
const CHUNK: usize = 256 * 1024;

/// A sending and a receiving school, and the receiver's keys.
async fn two_schools(daemon: &Daemon) -> (School, School, Vec<SchoolKey>) {
    let a = daemon.enrol("8613001").await;
    let b = daemon.enrol("8613002").await;
    let keys = a.keys_of(&b.laestab).await;
    (a, b, keys)
}

async fn download_many_serves_each_pack_as_download_would(daemon: Daemon) {
    let (a, b, keys) = two_schools(&daemon).await;
    // Eleven small packs (more than the server reads at once) and one of
    // two chunks.
    let mut small = Vec::new();
    for n in 0..11 {
        small.push(a.send_random(&b.laestab, &keys, 1000 + n).await);
    }
    let (big, big_data) = a.send_random(&b.laestab, &keys, CHUNK + 10).await;

    let mut asked: Vec<String> = small.iter().map(|(h, _)| h.pack_id.clone()).collect();
    asked.insert(3, big.pack_id.clone());
    asked.insert(5, "not-a-pack-id".into());
    asked.insert(9, PackId::new().to_string());
    asked.push(small[0].0.pack_id.clone());
    let asked_str: Vec<&str> = asked.iter().map(String::as_str).collect();
    let answers = b.download_many(&asked_str).await.unwrap();
    let ids: Vec<&str> = answers.iter().map(|a| a.pack_id.as_str()).collect();
    assert_eq!(ids, asked, "one answer an id, in order");
    for (answer, id) in answers.iter().zip(&asked) {
        match small.iter().find(|(h, _)| &h.pack_id == id) {
            Some((h, data)) => {
                assert_eq!(answer.code, 0, "{}", answer.message);
                assert_eq!(answer.header.as_ref(), Some(h));
                assert_eq!(answer.ciphertext.as_ref(), data.as_slice());
            }
            None => assert!(answer.header.is_none() && answer.ciphertext.is_empty()),
        }
    }
    let code = |at: usize| Code::from(answers[at].code);
    assert_eq!(
        code(3),
        Code::FailedPrecondition,
        "{:?}",
        answers[3].message
    );
    assert!(answers[3].message.contains("Download"));
    assert_eq!(code(5), Code::InvalidArgument, "{:?}", answers[5].message);
    assert!(answers[5].message.contains("pack_ids"));
    assert_eq!(code(9), Code::NotFound, "{:?}", answers[9].message);
    // The large pack is still served by `Download`, whole.
    let (_, data) = b.download(&big.pack_id).await.unwrap();
    assert_eq!(data, big_data);
    // The sender may not download what it sent, many to a call either.
    let answers = a.download_many(&[&small[1].0.pack_id]).await.unwrap();
    assert_eq!(Code::from(answers[0].code), Code::NotFound);
    // Too many ids: the call is refused whole.
    let err = b
        .exchange()
        .download_many(b.req(v1::DownloadManyRequest {
            pack_ids: vec![small[0].0.pack_id.clone(); 65],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 64"), "{err:?}");
    // Nothing changed state: every pack is still waiting.
    let inbox = b
        .exchange()
        .inbox(b.req(v1::InboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inbox.packs.len(), 12);
    assert!(
        inbox
            .packs
            .iter()
            .all(|p| p.state == v1::PackState::Pending as i32)
    );
}

on_both_backends!(download_many_serves_each_pack_as_download_would);

/// A key revoked while a `DownloadMany` call streams: the packs read
/// before the revocation may still arrive, none read after it does; the
/// call ends `Unauthenticated`.
async fn a_key_revoked_mid_call_gets_no_more_packs(daemon: Daemon) {
    let (a, b, keys) = two_schools(&daemon).await;
    // 64 packs just under a chunk each (16 MB): far more than the server
    // reads ahead (about six packs) and the transport holds in flight.
    let mut ids = Vec::new();
    for _ in 0..64 {
        ids.push(
            a.send_random(&b.laestab, &keys, CHUNK - 1024)
                .await
                .0
                .pack_id,
        );
    }
    let mut stream = b
        .exchange()
        .download_many(b.req(v1::DownloadManyRequest {
            pack_ids: ids.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.code, 0, "{}", first.message);
    let key_id = b.identity.key_id().to_string();
    let out = daemon
        .admin(&["admin", "key", "revoke", "8613002", &key_id])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut served = 1;
    let ended = loop {
        match stream.message().await {
            Ok(Some(answer)) => {
                assert_eq!(answer.code, 0, "{}", answer.message);
                served += 1;
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status = ended.unwrap_or_else(|| panic!("all {served} packs served after the revocation"));
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(served < 64, "{served}");
}

on_both_backends!(a_key_revoked_mid_call_gets_no_more_packs);
