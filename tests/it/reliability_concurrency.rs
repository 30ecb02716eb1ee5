//! Concurrency: 20 schools send real sealed packs while 10 schools pull and
//! acknowledge them, all at once on one daemon (real TLS, real SQLite).
//! Afterwards every pack is acknowledged exactly once, every sender sees a
//! receipt that verifies against the recipient's key for every pack, every
//! inbox is empty, the database agrees, the audit log verifies, the
//! daemon's memory stays bounded, and no pupil data is at rest on it.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::api::v1;
use baton::pack::SignedReceipt;
use common::reliability::{
    assert_daemon_holds_no_plaintext, distinctive_record, needles, seal_record,
};
use common::{Daemon, School};
use sha2::{Digest, Sha256};

const SENDERS: usize = 20;
const RECIPIENTS: usize = 10;
const PER_SENDER: usize = 15;

/// Pulls and acknowledges until `expected` packs are acknowledged; wakes on
/// `Watch` events, lists the inbox each time.
async fn pull_and_ack(school: Arc<School>, expected: usize) -> usize {
    let mut watch = school
        .exchange()
        .watch(school.req(v1::WatchRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut acked = HashSet::new();
    while acked.len() < expected {
        let inbox = school
            .exchange()
            .inbox(school.req(v1::InboxRequest {
                page_size: 1000,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        for entry in &inbox.packs {
            let header = entry.header.as_ref().unwrap();
            assert!(
                !acked.contains(&header.pack_id),
                "an acknowledged pack is still listed"
            );
            let (got, data) = school.download(&header.pack_id).await.unwrap();
            assert_eq!(&got, header);
            assert_eq!(Sha256::digest(&data).to_vec(), header.ciphertext_sha256);
            school
                .exchange()
                .acknowledge(school.req(v1::AcknowledgeRequest {
                    receipt: Some(school.receipt(header)),
                }))
                .await
                .unwrap();
            acked.insert(header.pack_id.clone());
        }
        if inbox.packs.is_empty() && acked.len() < expected {
            // Nothing waiting: sleep until the next pack arrives.
            tokio::time::timeout(Duration::from_secs(60), watch.message())
                .await
                .expect("no pack arrived for a minute")
                .unwrap();
        }
    }
    acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_send_while_ten_pull_and_acknowledge() {
    let daemon = Daemon::start(&[]).await;
    let mut senders = Vec::new();
    for n in 1..=SENDERS {
        senders.push(Arc::new(daemon.enrol(&format!("86120{n:02}")).await));
    }
    let mut recipients = Vec::new();
    for n in 1..=RECIPIENTS {
        recipients.push(Arc::new(daemon.enrol(&format!("86140{n:02}")).await));
    }
    let hwm_before = daemon.vm_hwm_kib();

    // Seal everything first (client-side work), then run the storm.
    let mut work = Vec::new();
    let mut all_needles = Vec::new();
    for (s, sender) in senders.iter().enumerate() {
        let mut packs = Vec::new();
        for k in 0..PER_SENDER {
            let r = (s + k) % RECIPIENTS;
            let keys = sender.keys_of(&recipients[r].laestab).await;
            let record = distinctive_record("Conc", 4545, (s * PER_SENDER + k) as u32);
            all_needles.extend(needles(&record));
            packs.push((r, seal_record(sender, &recipients[r], &keys, &record, None)));
        }
        work.push(packs);
    }
    let mut per_recipient = [0usize; RECIPIENTS];
    for packs in &work {
        for (r, _) in packs {
            per_recipient[*r] += 1;
        }
    }

    let started = Instant::now();
    let mut pullers = tokio::task::JoinSet::new();
    for (r, school) in recipients.iter().enumerate() {
        pullers.spawn(pull_and_ack(school.clone(), per_recipient[r]));
    }
    let mut sends = tokio::task::JoinSet::new();
    for (s, packs) in work.into_iter().enumerate() {
        let sender = senders[s].clone();
        sends.spawn(async move {
            for (_, (header, data)) in &packs {
                let resp = sender.upload(header, data, 16 * 1024).await.unwrap();
                assert!(!resp.already_stored);
            }
            packs
                .into_iter()
                .map(|(r, (h, _))| (r, h))
                .collect::<Vec<_>>()
        });
    }
    let mut sent = Vec::new();
    while let Some(done) = sends.join_next().await {
        sent.push(done.unwrap());
    }
    let mut acked = 0;
    while let Some(done) = pullers.join_next().await {
        acked += done.unwrap();
    }
    let elapsed = started.elapsed();
    let total = SENDERS * PER_SENDER;
    assert_eq!(acked, total);

    // Every sender sees every pack acknowledged with a receipt that verifies.
    for (s, headers) in sent.iter().enumerate() {
        let sender = senders
            .iter()
            .find(|x| x.laestab.to_string() == headers[0].1.from)
            .unwrap();
        let listed = sender
            .exchange()
            .sent(sender.req(v1::SentRequest {
                page_size: 1000,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.packs.len(), PER_SENDER, "sender {s}");
        for entry in &listed.packs {
            let header = entry.header.as_ref().unwrap();
            assert_eq!(entry.state, v1::PackState::Acknowledged as i32);
            assert!(entry.downloaded_at_ms > 0);
            let receipt = SignedReceipt::try_from(entry.receipt.as_ref().unwrap()).unwrap();
            let (r, _) = headers
                .iter()
                .find(|(_, h)| h.pack_id == header.pack_id)
                .unwrap();
            receipt.verify(&recipients[*r].identity.public()).unwrap();
            assert_eq!(receipt.receipt().pack_id.to_string(), header.pack_id);
            assert_eq!(
                receipt.receipt().ciphertext_sha256.to_vec(),
                header.ciphertext_sha256
            );
        }
    }
    // Every inbox is empty of acknowledged packs.
    for school in &recipients {
        let inbox = school
            .exchange()
            .inbox(school.req(v1::InboxRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(inbox.packs.is_empty());
    }
    let pool = common::open_db(&daemon.db_path()).await;
    let states: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT status, count(*), count(receipt) FROM packs GROUP BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(
        states,
        vec![("acknowledged".to_string(), total as i64, total as i64)]
    );
    let out = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(daemon.healthy().await);
    let hwm_after = daemon.vm_hwm_kib();
    assert!(hwm_after < 512 * 1024, "daemon peak memory {hwm_after} KiB");
    let scanned = assert_daemon_holds_no_plaintext(&daemon, &all_needles);
    println!(
        "concurrency: {SENDERS} senders x {PER_SENDER} packs, {RECIPIENTS} pullers/ackers at once: {total} packs sent, downloaded, \
         acknowledged and receipts verified in {:.1} s; daemon VmHWM {hwm_before} -> {hwm_after} KiB; \
         plaintext scan: {} files, {} bytes, 0 hits",
        elapsed.as_secs_f64(),
        scanned.files,
        scanned.bytes
    );
}
