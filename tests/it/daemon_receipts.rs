//! Issue 22 item 1: receipts many to a call (`Exchange.AcknowledgeMany`).
//! Each receipt is checked as `Acknowledge` checks it and answered on its
//! own: one that is forged, for another school's pack, or conflicting
//! fails alone and records nothing, the good ones are recorded and verify
//! at the sender, and a call carrying too many is refused whole.

use baton::api::v1;
use baton::pack::Receipt;
use tonic::Code;

use crate::common::{Daemon, ciphertext};

#[tokio::test]
async fn issue22_many_receipts_in_one_call_are_each_answered_alone() {
    let daemon = Daemon::start(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let c = daemon.enrol("8614002").await;
    let to_b = a.keys_of(&b.laestab).await;
    let to_c = a.keys_of(&c.laestab).await;
    let mut for_b = Vec::new();
    for _ in 0..4 {
        let data = ciphertext(3000);
        let header = v1::PackHeader::from(&a.header_for(&b.laestab, &to_b, &data));
        a.upload(&header, &data, 4096).await.unwrap();
        for_b.push(header);
    }
    let data = ciphertext(3000);
    let for_c = v1::PackHeader::from(&a.header_for(&c.laestab, &to_c, &data));
    a.upload(&for_c, &data, 4096).await.unwrap();

    // Pack 1 acknowledged before with another receipt (another time).
    let earlier = b
        .identity
        .sign_receipt(Receipt {
            pack_id: for_b[1].pack_id.parse().unwrap(),
            ciphertext_sha256: for_b[1].ciphertext_sha256.clone().try_into().unwrap(),
            received_at_ms: 99,
            recipient_key_id: b.identity.key_id(),
        })
        .unwrap();
    let earlier = v1::Receipt::from(&earlier);
    b.exchange()
        .acknowledge(b.req(v1::AcknowledgeRequest {
            receipt: Some(earlier),
        }))
        .await
        .unwrap();
    // A forged receipt: its signature altered.
    let mut forged = b.receipt(&for_b[2]);
    forged.signature[0] ^= 1;

    let receipts = vec![
        b.receipt(&for_b[0]), // good
        b.receipt(&for_b[1]), // another receipt is recorded
        forged,               // bad signature
        b.receipt(&for_c),    // c's pack, not b's
        b.receipt(&for_b[3]), // good
    ];
    let answer = b
        .exchange()
        .acknowledge_many(b.req(v1::AcknowledgeManyRequest { receipts }))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<Code> = answer
        .outcomes
        .iter()
        .map(|o| Code::from_i32(o.code))
        .collect();
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::AlreadyExists,
            Code::InvalidArgument,
            Code::NotFound,
            Code::Ok
        ],
        "{:?}",
        answer.outcomes
    );
    assert_eq!(answer.outcomes[3].pack_id, for_c.pack_id);
    assert!(answer.outcomes[2].message.contains("signature"));
    assert!(answer.outcomes[0].acknowledged_at_ms > 0);
    assert!(
        answer.checkpoint.is_some(),
        "a signed checkpoint is returned"
    );

    // What the sender sees: the good ones acknowledged with b's receipts,
    // the forged one and c's pack still waiting.
    let sent = a
        .exchange()
        .sent(a.req(v1::SentRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let state = |id: &str| {
        sent.packs
            .iter()
            .find(|p| p.header.as_ref().unwrap().pack_id == id)
            .map(|p| (p.state, p.receipt.is_some()))
            .unwrap()
    };
    let acknowledged = (v1::PackState::Acknowledged as i32, true);
    assert_eq!(state(&for_b[0].pack_id), acknowledged);
    assert_eq!(state(&for_b[1].pack_id), acknowledged);
    assert_eq!(state(&for_b[3].pack_id), acknowledged);
    assert_ne!(state(&for_b[2].pack_id), acknowledged);
    assert_ne!(state(&for_c.pack_id), acknowledged);

    // The same call again is idempotent for the recorded receipts.
    let again = b
        .exchange()
        .acknowledge_many(b.req(v1::AcknowledgeManyRequest {
            receipts: vec![b.receipt(&for_b[0])],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.outcomes[0].code, 0);

    // Too many in one call: refused whole, naming the field.
    let too_many = vec![b.receipt(&for_b[2]); 501];
    let err = b
        .exchange()
        .acknowledge_many(b.req(v1::AcknowledgeManyRequest { receipts: too_many }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("receipts"), "{err:?}");
}
