//! Throughput of the upload path: 20 KB packs, many in flight, over TLS, on
//! SQLite and (when `BATON_TEST_DATABASE_URL` is set) PostgreSQL with one
//! node and with two nodes on one database. Ignored by default; run with
//! `cargo test --release --all-features --test it daemon_bench -- --ignored --nocapture --test-threads 1`.
use crate::common;

use std::sync::Arc;
use std::time::Instant;

use baton::api::v1;
use common::{Daemon, ciphertext};

const PACKS: usize = 2000;
const IN_FLIGHT: usize = 32;

/// Uploads `PACKS` packs of 20 KB through `nodes` (clients spread over
/// them); returns uploads a second.
async fn ingest(label: &str, nodes: &[&Daemon]) -> f64 {
    let a = Arc::new(nodes[0].enrol("8612001").await);
    let b = nodes[0].enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
    let mut channels = Vec::new();
    for node in nodes {
        channels.push(node.channel().await);
    }
    let packs: Vec<(v1::PackHeader, Vec<u8>)> = (0..PACKS)
        .map(|_| {
            let data = ciphertext(20 * 1024);
            (
                v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data)),
                data,
            )
        })
        .collect();
    let queue = Arc::new(tokio::sync::Mutex::new(packs));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..IN_FLIGHT {
        let (a, queue, channel) = (a.clone(), queue.clone(), channels[i % nodes.len()].clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((h, data)) = queue.lock().await.pop() else {
                    break;
                };
                let done = a.via(&channel).upload(&h, &data, 64 * 1024).await.unwrap();
                assert!(!done.already_stored);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = PACKS as f64 / start.elapsed().as_secs_f64();
    println!(
        "{label}: {PACKS} uploads of 20 KB, {IN_FLIGHT} in flight, {} node(s): {rate:.0} uploads/s",
        nodes.len()
    );
    rate
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn uploads_per_second_20kb() {
    let daemon = Daemon::start(&[]).await;
    ingest("sqlite", &[&daemon]).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn uploads_per_second_20kb_postgres_one_node() {
    let Some(daemon) = Daemon::start_postgres("bench-postgres", &[]).await else {
        return;
    };
    ingest("postgres", &[&daemon]).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn uploads_per_second_20kb_postgres_two_nodes() {
    let Some(a) = Daemon::start_postgres("bench-postgres-2", &[]).await else {
        return;
    };
    let b = Daemon::start_beside(&a, &[]).await;
    ingest("postgres", &[&a, &b]).await;
}
