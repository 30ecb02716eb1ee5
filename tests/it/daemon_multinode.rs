//! Several `batond` nodes on one PostgreSQL database: `Watch` events cross
//! nodes, concurrent uploads and acknowledgements through both nodes lose,
//! duplicate and half-show nothing, the audit chain stays one chain, and a
//! node killed mid-upload leaves nothing visible. Skipped (saying so)
//! without `BATON_TEST_DATABASE_URL`.
use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use baton::api::v1;
use common::{Daemon, School, ciphertext, upload_messages};
use tonic::transport::Channel;

/// Two nodes on one fresh database.
async fn two_nodes(what: &str) -> Option<(Daemon, Daemon)> {
    let a = Daemon::start_postgres(what, &[]).await?;
    let b = Daemon::start_beside(&a, &[]).await;
    Some((a, b))
}

fn audit_verifies(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn inbox_via(school: &School, channel: &Channel) -> Vec<v1::InboxEntry> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = school
            .via(channel)
            .exchange()
            .inbox(school.req(v1::InboxRequest {
                page_size: 50,
                page_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        all.extend(page.packs);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

async fn ack_via(school: &School, channel: &Channel, header: &v1::PackHeader) {
    school
        .via(channel)
        .exchange()
        .acknowledge(school.req(v1::AcknowledgeRequest {
            receipt: Some(school.receipt(header)),
        }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_on_a_is_watched_and_pulled_on_b_and_acknowledged_on_a() {
    let Some((node_a, node_b)) = two_nodes("multinode-watch").await else {
        return;
    };
    let a = node_a.enrol("8612001").await;
    let b = node_a.enrol("8612002").await;
    let on_b = node_b.channel().await;
    let mut watch = b
        .via(&on_b)
        .exchange()
        .watch(b.req(v1::WatchRequest {}))
        .await
        .unwrap()
        .into_inner();

    let keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(300 * 1024);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    assert!(
        !a.upload(&header, &data, 64 * 1024)
            .await
            .unwrap()
            .already_stored
    );

    let event = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("node B's watcher heard nothing")
        .unwrap()
        .unwrap();
    assert_eq!(event.header.as_ref().unwrap().pack_id, header.pack_id);
    let (got_h, got) = b.via(&on_b).download(&header.pack_id).await.unwrap();
    assert_eq!((got_h, got), (header.clone(), data));
    ack_via(&b, &node_a.channel().await, &header).await;
    let sent = a
        .via(&on_b)
        .exchange()
        .sent(a.req(v1::SentRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.packs[0].state, v1::PackState::Acknowledged as i32);
    audit_verifies(&node_b.admin(&["admin", "audit", "verify"]).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_clients_on_two_nodes_lose_and_duplicate_nothing() {
    const CLIENTS: usize = 8;
    const EACH: usize = 6;
    let Some((node_a, node_b)) = two_nodes("multinode-hammer").await else {
        return;
    };
    let a = Arc::new(node_a.enrol("8612001").await);
    let b = Arc::new(node_a.enrol("8612002").await);
    let channels = Arc::new([node_a.channel().await, node_b.channel().await]);
    let keys = Arc::new(a.keys_of(&b.laestab).await);

    // Each client uploads through one node and retries through the other;
    // one pack id is also raced through both nodes at once.
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (a, b, channels, keys) = (a.clone(), b.clone(), channels.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..EACH {
                let data = ciphertext(20 * 1024);
                let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
                let first = a.via(&channels[c % 2]);
                let second = a.via(&channels[(c + 1) % 2]);
                let (x, y) = tokio::join!(
                    first.upload(&h, &data, 8 * 1024),
                    second.upload(&h, &data, 8 * 1024),
                );
                let (x, y) = (x.unwrap(), y.unwrap());
                assert!(
                    x.already_stored != y.already_stored,
                    "stored twice or never"
                );
                ids.push(h);
            }
            ids
        }));
    }
    let mut uploaded = Vec::new();
    for t in tasks {
        uploaded.extend(t.await.unwrap());
    }
    let expected: HashSet<String> = uploaded.iter().map(|h| h.pack_id.clone()).collect();
    assert_eq!(expected.len(), CLIENTS * EACH);

    for channel in channels.iter() {
        let inbox = inbox_via(&b, channel).await;
        let seen: Vec<String> = inbox
            .iter()
            .map(|p| p.header.as_ref().unwrap().pack_id.clone())
            .collect();
        assert_eq!(seen.len(), expected.len(), "lost or duplicated packs");
        assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
    }

    // Acknowledge concurrently, each pack through both nodes at once.
    let mut tasks = Vec::new();
    for chunk in uploaded.chunks(EACH) {
        let (b, channels, chunk) = (b.clone(), channels.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for h in &chunk {
                let (got_h, _) = b.via(&channels[0]).download(&h.pack_id).await.unwrap();
                assert_eq!(&got_h, h);
                tokio::join!(ack_via(&b, &channels[0], h), ack_via(&b, &channels[1], h));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(inbox_via(&b, &channels[1]).await.is_empty());
    audit_verifies(&node_a.admin(&["admin", "audit", "verify"]).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_upload_leaves_nothing_and_the_retry_on_the_other_succeeds() {
    let Some((mut node_a, node_b)) = two_nodes("multinode-kill").await else {
        return;
    };
    let a = node_a.enrol("8612001").await;
    let b = node_a.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(3 * 1024 * 1024);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    let db = sqlx::PgPool::connect(node_a.database_url.as_deref().unwrap())
        .await
        .unwrap();

    // Header and two 1 MiB chunks through node A, then SIGKILL node A.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut msgs = upload_messages(&header, &data, 1024 * 1024).into_iter();
    let mut exchange = a.exchange();
    let req = a.req(tokio_stream::wrappers::ReceiverStream::new(rx));
    let call = tokio::spawn(async move { exchange.upload(req).await });
    for _ in 0..3 {
        tx.send(msgs.next().unwrap()).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks")
            .fetch_one(&db)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing staged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node_a.child.start_kill().unwrap();
    node_a.child.wait().await.unwrap();
    assert!(call.await.unwrap().is_err(), "the killed upload succeeded");

    let on_b = node_b.channel().await;
    assert!(inbox_via(&b, &on_b).await.is_empty());
    let (packs, visible): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM packs), \
         (SELECT COUNT(*) FROM pack_chunks WHERE NOT staged)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((packs, visible), (0, 0));

    let done = a
        .via(&on_b)
        .upload(&header, &data, 256 * 1024)
        .await
        .unwrap();
    assert!(!done.already_stored);
    let again = a
        .via(&on_b)
        .upload(&header, &data, 256 * 1024)
        .await
        .unwrap();
    assert!(again.already_stored);
    let inbox = inbox_via(&b, &on_b).await;
    assert_eq!(inbox.len(), 1);
    let (_, got) = b.via(&on_b).download(&header.pack_id).await.unwrap();
    assert_eq!(got, data);
    audit_verifies(&node_b.admin(&["admin", "audit", "verify"]).await);
}
