//! Issue 22 item 1: receipts many to a call (`Exchange.AcknowledgeMany`)
//! and download confirmations many to a call (`Exchange.ConfirmDownloads`).
//! Each receipt or confirmation is checked as the one-pack call checks it
//! and answered on its own: one that is forged, for another school's pack,
//! or conflicting fails alone and records nothing, the good ones are
//! recorded (and audited once) and seen by the sender, and a call carrying
//! too many is refused whole.

use baton::api::v1;
use baton::pack::Receipt;
use tonic::Code;

use crate::common::{Daemon, School, ciphertext};

/// A daemon where school a has sent `to_b` packs to b and one to c.
async fn sent_to_b_and_c(
    to_b: usize,
) -> (
    Daemon,
    School,
    School,
    School,
    Vec<v1::PackHeader>,
    v1::PackHeader,
) {
    let daemon = Daemon::start(&[]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let c = daemon.enrol("8614002").await;
    let send = |to: &School| {
        let (a, to) = (&a, to.laestab);
        async move {
            let keys = a.keys_of(&to).await;
            let data = ciphertext(3000);
            let header = v1::PackHeader::from(&a.header_for(&to, &keys, &data));
            a.upload(&header, &data, 4096).await.unwrap();
            header
        }
    };
    let mut for_b = Vec::new();
    for _ in 0..to_b {
        for_b.push(send(&b).await);
    }
    let for_c = send(&c).await;
    (daemon, a, b, c, for_b, for_c)
}

#[tokio::test]
async fn issue22_many_receipts_in_one_call_are_each_answered_alone() {
    let (_daemon, a, b, _c, for_b, for_c) = sent_to_b_and_c(4).await;

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

#[tokio::test]
async fn issue22_many_download_confirmations_in_one_call_are_each_answered_alone() {
    let (daemon, a, b, c, for_b, for_c) = sent_to_b_and_c(3).await;

    let confirm = |h: &v1::PackHeader| v1::ConfirmDownloadRequest {
        pack_id: h.pack_id.clone(),
        ciphertext_sha256: h.ciphertext_sha256.clone(),
    };
    let mut wrong_hash = confirm(&for_b[1]);
    wrong_hash.ciphertext_sha256[0] ^= 1;
    let packs = vec![
        confirm(&for_b[0]), // good
        wrong_hash,         // not the stored pack's hash
        confirm(&for_c),    // c's pack, not b's
        v1::ConfirmDownloadRequest {
            pack_id: "not-a-pack".into(),
            ciphertext_sha256: vec![0; 32],
        },
        confirm(&for_b[2]), // good
        confirm(&for_b[0]), // the first again, in the same call
    ];
    let answer = b
        .exchange()
        .confirm_downloads(b.req(v1::ConfirmDownloadsRequest { packs }))
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
            Code::InvalidArgument,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Ok,
            Code::Ok
        ],
        "{:?}",
        answer.outcomes
    );
    assert!(answer.outcomes[1].message.contains("ciphertext_sha256"));
    assert!(answer.outcomes[3].message.contains("pack_id"));
    assert_eq!(answer.outcomes[2].pack_id, for_c.pack_id);
    assert_eq!(
        answer.outcomes[0].downloaded_at_ms, answer.outcomes[5].downloaded_at_ms,
        "the first recorded time is kept"
    );
    assert!(answer.outcomes[0].downloaded_at_ms > 0);

    // What the sender sees: the good ones downloaded, the others waiting.
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
            .map(|p| p.state)
            .unwrap()
    };
    let downloaded = v1::PackState::Downloaded as i32;
    assert_eq!(state(&for_b[0].pack_id), downloaded);
    assert_eq!(state(&for_b[2].pack_id), downloaded);
    assert_ne!(state(&for_b[1].pack_id), downloaded);
    assert_ne!(state(&for_c.pack_id), downloaded);

    // Each download audited once, by b; none for the refused ones.
    let out = daemon.admin(&["admin", "audit", "export"]).await;
    assert!(out.status.success());
    let downloads: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "pack.download")
        .collect();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    for entry in &downloads {
        let text = entry.to_string();
        assert!(text.contains(&b.laestab.to_string()), "{text}");
        assert!(
            text.contains(&for_b[0].pack_id) || text.contains(&for_b[2].pack_id),
            "{text}"
        );
    }

    // c cannot confirm b's pack by naming it among its own.
    let answer = c
        .exchange()
        .confirm_downloads(c.req(v1::ConfirmDownloadsRequest {
            packs: vec![confirm(&for_b[1]), confirm(&for_c)],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outcomes[0].code, Code::NotFound as i32);
    assert_eq!(answer.outcomes[1].code, 0);

    // A call that would write nothing still needs a caller: no packs, or
    // only malformed ids, with a token that is not one.
    for packs in [
        Vec::new(),
        vec![v1::ConfirmDownloadRequest {
            pack_id: "not-a-pack".into(),
            ciphertext_sha256: vec![0; 32],
        }],
    ] {
        let err = b
            .exchange()
            .confirm_downloads(crate::common::with_token(
                "bt_0000000000000000000000000000000000000000000000000000000000000000",
                v1::ConfirmDownloadsRequest { packs },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }

    // Too many in one call: refused whole, naming the field.
    let too_many = vec![confirm(&for_b[1]); 501];
    let err = b
        .exchange()
        .confirm_downloads(b.req(v1::ConfirmDownloadsRequest { packs: too_many }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("packs"), "{err:?}");
}
