//! Throughput of the upload path: 20 KB packs, many in flight, over TLS.
//! Ignored by default; run with
//! `cargo test --release --all-features --test daemon_bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use baton::api::v1;
use common::{Daemon, ciphertext};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn uploads_per_second_20kb() {
    const PACKS: usize = 2000;
    const IN_FLIGHT: usize = 32;
    let daemon = Daemon::start(&[]).await;
    let a = Arc::new(daemon.enrol("8612001").await);
    let b = daemon.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
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
    for _ in 0..IN_FLIGHT {
        let (a, queue) = (a.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((h, data)) = queue.lock().await.pop() else {
                    break;
                };
                assert!(!a.upload(&h, &data, 64 * 1024).await.unwrap().already_stored);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{PACKS} uploads of 20 KB, {IN_FLIGHT} in flight: {:.0} uploads/s",
        PACKS as f64 / secs
    );
}
