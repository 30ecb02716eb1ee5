//! The daemon on PostgreSQL end to end: upload, inbox, download,
//! acknowledge, sent and `batond admin audit verify`, through the real
//! `batond`. Skipped (saying so) without `BATON_TEST_DATABASE_URL`.
use crate::common;

use baton::api::v1;
use common::{Daemon, ciphertext};

#[tokio::test(flavor = "multi_thread")]
async fn journey_on_postgres() {
    let Some(daemon) = Daemon::start_postgres("postgres-journey", &[]).await else {
        return;
    };
    let migrate = daemon.admin(&["admin", "migrate"]).await;
    assert!(migrate.status.success(), "{migrate:?}");
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;

    // One pack of several chunks, one tiny; a retry is recognised.
    let big = ciphertext(2 * 1024 * 1024 + 1234);
    let small = ciphertext(20 * 1024);
    let big_h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &big));
    let small_h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &small));
    assert!(
        !a.upload(&big_h, &big, 256 * 1024)
            .await
            .unwrap()
            .already_stored
    );
    assert!(
        !a.upload(&small_h, &small, 64 * 1024)
            .await
            .unwrap()
            .already_stored
    );
    assert!(
        a.upload(&small_h, &small, 64 * 1024)
            .await
            .unwrap()
            .already_stored
    );

    let inbox = b
        .exchange()
        .inbox(b.req(v1::InboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = inbox
        .packs
        .iter()
        .map(|p| p.header.as_ref().unwrap().pack_id.clone())
        .collect();
    assert_eq!(ids, vec![big_h.pack_id.clone(), small_h.pack_id.clone()]);

    for (h, data) in [(&big_h, &big), (&small_h, &small)] {
        let (got_h, got) = b.download(&h.pack_id).await.unwrap();
        assert_eq!(&got_h, h);
        assert_eq!(&got, data);
        b.exchange()
            .acknowledge(b.req(v1::AcknowledgeRequest {
                receipt: Some(b.receipt(h)),
            }))
            .await
            .unwrap();
    }
    let inbox = b
        .exchange()
        .inbox(b.req(v1::InboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(inbox.packs.is_empty());
    let sent = a
        .exchange()
        .sent(a.req(v1::SentRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.packs.len(), 2);
    assert!(
        sent.packs
            .iter()
            .all(|p| p.receipt.is_some() && p.state == v1::PackState::Acknowledged as i32)
    );

    let verify = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
