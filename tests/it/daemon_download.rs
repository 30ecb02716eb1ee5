//! `DownloadMany`: small packs many to a call, answered one message a
//! requested id in the request's order, each exactly as `Download` would
//! serve it or refuse it.
use crate::common;

use baton::api::v1;
use baton::pack::PackId;
use common::{Daemon, ciphertext};
use tonic::Code;

/// The largest chunk an upload sends (the server's chunk size).
const CHUNK: usize = 256 * 1024;

async fn download_many_serves_each_pack_as_download_would(daemon: Daemon) {
    let a = daemon.enrol("8613001").await;
    let b = daemon.enrol("8613002").await;
    let keys = a.keys_of(&b.laestab).await;
    // Eleven small packs (more than the server reads at once) and one of
    // two chunks.
    let mut small = Vec::new();
    for n in 0..11 {
        let data = ciphertext(1000 + n);
        let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        a.upload(&h, &data, CHUNK).await.unwrap();
        small.push((h, data));
    }
    let big_data = ciphertext(CHUNK + 10);
    let big = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &big_data));
    a.upload(&big, &big_data, CHUNK).await.unwrap();

    let mut asked: Vec<String> = small.iter().map(|(h, _)| h.pack_id.clone()).collect();
    asked.insert(3, big.pack_id.clone());
    asked.insert(5, "not-a-pack-id".into());
    asked.insert(9, PackId::new().to_string());
    asked.push(small[0].0.pack_id.clone());
    let mut stream = b
        .exchange()
        .download_many(b.req(v1::DownloadManyRequest {
            pack_ids: asked.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(answer) = stream.message().await.unwrap() {
        answers.push(answer);
    }
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
    let mut stream = a
        .exchange()
        .download_many(a.req(v1::DownloadManyRequest {
            pack_ids: vec![small[1].0.pack_id.clone()],
        }))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    assert_eq!(Code::from(answer.code), Code::NotFound);
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
    let a = daemon.enrol("8613001").await;
    let b = daemon.enrol("8613002").await;
    let keys = a.keys_of(&b.laestab).await;
    // 64 packs just under a chunk each (16 MB): far more than the server
    // reads ahead (about seven packs) and the transport holds in flight.
    let mut ids = Vec::new();
    for _ in 0..64 {
        let data = ciphertext(CHUNK - 1024);
        let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        a.upload(&h, &data, CHUNK).await.unwrap();
        ids.push(h.pack_id);
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
