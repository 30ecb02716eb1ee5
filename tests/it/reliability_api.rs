//! Bad input at the API: malformed protobuf (raw gRPC frames of garbage),
//! an upload stream out of order (chunk before header), a header twice,
//! length lies both ways, a message over the 4 MiB limit, 10,000 tiny
//! chunks, slowloris uploads that stall before or after the header (the
//! daemon drops them after `--upload-idle-timeout-secs` and discards what
//! they staged), and absurd page sizes (clamped). Each gets the right
//! status, the daemon's peak memory stays bounded, and it stays healthy.

use crate::common;

use std::time::{Duration, Instant};

use baton::api::v1;
use common::{Daemon, School, ciphertext, upload_messages};
use prost::bytes::{Buf, BufMut};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends and receives raw bytes as gRPC messages.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_unary(school: &School, path: &'static str, body: Vec<u8>) -> Code {
    let mut grpc = tonic::client::Grpc::new(school.channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(school.req(body), PathAndQuery::from_static(path), Raw)
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

async fn raw_upload(school: &School, frames: Vec<Vec<u8>>) -> Code {
    let mut grpc = tonic::client::Grpc::new(school.channel.clone());
    grpc.ready().await.unwrap();
    grpc.client_streaming(
        school.req(tokio_stream::iter(frames)),
        PathAndQuery::from_static("/baton.v1.Exchange/Upload"),
        Raw,
    )
    .await
    .map_or_else(|s| s.code(), |_| Code::Ok)
}

async fn upload(
    school: &School,
    msgs: Vec<v1::UploadRequest>,
) -> Result<v1::UploadResponse, tonic::Status> {
    school
        .exchange()
        .upload(school.req(tokio_stream::iter(msgs)))
        .await
        .map(|r| r.into_inner())
}

async fn staged_chunks(daemon: &Daemon) -> i64 {
    let pool = common::open_db(&daemon.db_path()).await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM pack_chunks WHERE staged = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n + common::ciphertext_files(&daemon.data).0 as i64
}

/// Opens an upload stream, sends `first`, then stalls with the stream
/// open; returns the status and how long the daemon waited.
async fn stalled_upload(school: &School, first: Vec<v1::UploadRequest>) -> (Code, Duration) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for m in first {
        tx.send(m).await.unwrap();
    }
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        school
            .exchange()
            .upload(school.req(tokio_stream::wrappers::ReceiverStream::new(rx))),
    )
    .await
    .expect("the daemon never dropped a stalled upload");
    drop(tx);
    (
        result.map_or_else(|s| s.code(), |_| Code::Ok),
        started.elapsed(),
    )
}

/// Records a case and asserts its status is one of `allowed`.
fn check(table: &mut Vec<(&'static str, Code)>, case: &'static str, got: Code, allowed: &[Code]) {
    assert!(
        allowed.contains(&got),
        "{case}: got {got:?}, expected one of {allowed:?}"
    );
    table.push((case, got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_and_the_daemon_stays_up() {
    let daemon = Daemon::start(&["--upload-idle-timeout-secs", "1"]).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let keys = a.keys_of(&b.laestab).await;
    let hwm_start = daemon.vm_hwm_kib();
    let mut table: Vec<(&'static str, Code)> = Vec::new();

    // Malformed protobuf.
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12];
    check(
        &mut table,
        "Inbox: garbage protobuf",
        raw_unary(&a, "/baton.v1.Exchange/Inbox", garbage.clone()).await,
        &[Code::Internal, Code::InvalidArgument],
    );
    check(
        &mut table,
        "Acknowledge: garbage protobuf",
        raw_unary(&b, "/baton.v1.Exchange/Acknowledge", garbage.clone()).await,
        &[Code::Internal, Code::InvalidArgument],
    );
    check(
        &mut table,
        "AcknowledgeMany: garbage protobuf",
        raw_unary(&b, "/baton.v1.Exchange/AcknowledgeMany", garbage.clone()).await,
        &[Code::Internal, Code::InvalidArgument],
    );
    check(
        &mut table,
        "Upload: garbage frames",
        raw_upload(&a, vec![garbage.clone(), garbage]).await,
        &[Code::Internal, Code::InvalidArgument],
    );
    check(
        &mut table,
        "Upload: no messages at all",
        raw_upload(&a, vec![]).await,
        &[Code::InvalidArgument],
    );

    // Out of order, twice, lies.
    let data = ciphertext(5000);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    let msgs = upload_messages(&header, &data, 1000);
    let mut reordered = msgs.clone();
    reordered.swap(0, 1);
    check(
        &mut table,
        "Upload: chunk before header",
        upload(&a, reordered).await.unwrap_err().code(),
        &[Code::InvalidArgument],
    );
    let mut twice = msgs.clone();
    twice.insert(2, msgs[0].clone());
    check(
        &mut table,
        "Upload: header twice",
        upload(&a, twice).await.unwrap_err().code(),
        &[Code::InvalidArgument],
    );
    let mut short = msgs.clone();
    short.pop();
    check(
        &mut table,
        "Upload: fewer bytes than the header says",
        upload(&a, short).await.unwrap_err().code(),
        &[Code::InvalidArgument],
    );
    let mut long = msgs.clone();
    long.push(msgs[1].clone());
    check(
        &mut table,
        "Upload: more bytes than the header says",
        upload(&a, long).await.unwrap_err().code(),
        &[Code::InvalidArgument],
    );
    let mut empty = msgs.clone();
    empty.insert(1, v1::UploadRequest { part: None });
    check(
        &mut table,
        "Upload: an empty message",
        upload(&a, empty).await.unwrap_err().code(),
        &[Code::InvalidArgument],
    );

    // Over the 4 MiB message limit.
    let big = ciphertext(5 * 1024 * 1024);
    let big_header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &big));
    check(
        &mut table,
        "Upload: one 5 MiB message",
        upload(&a, upload_messages(&big_header, &big, big.len()))
            .await
            .unwrap_err()
            .code(),
        &[Code::OutOfRange, Code::ResourceExhausted],
    );
    let hwm_after_big = daemon.vm_hwm_kib();

    // 10,000 tiny chunks: accepted, byte-identical.
    let tiny = ciphertext(10_000);
    let tiny_header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &tiny));
    let started = Instant::now();
    upload(&a, upload_messages(&tiny_header, &tiny, 1))
        .await
        .unwrap();
    let tiny_secs = started.elapsed().as_secs_f64();
    assert_eq!(b.download(&tiny_header.pack_id).await.unwrap().1, tiny);
    table.push(("Upload: 10,000 one-byte chunks", Code::Ok));

    // Slowloris: stalled before the header, and after 1.5 MiB (one chunk staged).
    let (code, waited) = stalled_upload(&a, vec![]).await;
    check(
        &mut table,
        "Upload: stalled before the header",
        code,
        &[Code::DeadlineExceeded],
    );
    assert!(waited < Duration::from_secs(10));
    let slow = ciphertext(3 * 1024 * 1024);
    let slow_header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &slow));
    let first: Vec<_> = upload_messages(&slow_header, &slow, 512 * 1024)
        .into_iter()
        .take(4)
        .collect();
    let (code, waited_after) = stalled_upload(&a, first).await;
    check(
        &mut table,
        "Upload: stalled after 1.5 MiB",
        code,
        &[Code::DeadlineExceeded],
    );
    assert_eq!(
        staged_chunks(&daemon).await,
        0,
        "staged chunks of a stalled upload"
    );
    // The same pack then uploads in full.
    a.upload(&slow_header, &slow, 512 * 1024).await.unwrap();

    // Absurd page sizes are clamped to 1000.
    for _ in 0..1001 {
        let d = ciphertext(16);
        let h = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &d));
        a.upload(&h, &d, 16).await.unwrap();
    }
    let page = b
        .exchange()
        .inbox(b.req(v1::InboxRequest {
            page_size: u32::MAX,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.packs.len(), 1000);
    assert!(!page.next_page_token.is_empty());
    let sent = a
        .exchange()
        .sent(a.req(v1::SentRequest {
            page_size: u32::MAX,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.packs.len(), 1000);
    table.push(("Inbox/Sent: page_size u32::MAX -> 1000", Code::Ok));
    check(
        &mut table,
        "Inbox: a forged page token",
        b.exchange()
            .inbox(b.req(v1::InboxRequest {
                page_size: 10,
                page_token: "x' OR 1=1".into(),
            }))
            .await
            .unwrap_err()
            .code(),
        &[Code::InvalidArgument],
    );

    assert!(
        daemon.healthy().await,
        "the daemon is not healthy after bad input"
    );
    let hwm_end = daemon.vm_hwm_kib();
    assert!(hwm_end < 256 * 1024, "daemon peak memory {hwm_end} KiB");
    println!("api: {} cases, all with the expected status:", table.len());
    for (case, got) in &table {
        println!("  {case}: {got:?}");
    }
    println!(
        "api: 10,000 one-byte chunks in {tiny_secs:.2} s; stalled uploads dropped after {:.1} s / {:.1} s \
         (idle timeout 1 s); daemon VmHWM {hwm_start} KiB at start, {hwm_after_big} KiB after the 5 MiB message, {hwm_end} KiB at the end; healthy",
        waited.as_secs_f64(),
        waited_after.as_secs_f64()
    );
}
