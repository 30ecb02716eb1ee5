//! Issue 16: the daemon stays up, within bounds, while it is abused: without
//! a token (connections that never start TLS, from many addresses) and with
//! one (too many long calls, an upload that trickles). A real client's calls
//! complete throughout. Figures are printed for docs/reliability.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use baton::api::v1;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{Daemon, ciphertext, upload_messages};

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU time the process has used, clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A connection from `127.0.0.N` that never sends a byte.
async fn idle_connection(to: SocketAddr, n: u8) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), 0))
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// 1,100 connections from ten addresses that never start TLS: the daemon
/// holds at most its per-address cap of each, closes the rest at once,
/// drops the held ones when the handshake times out, does not spin, and
/// serves a real client all the while.
#[tokio::test]
async fn issue16_connections_that_never_start_tls_are_bounded() {
    let daemon = Daemon::start_sqlite(&[
        "--max-connections",
        "300",
        "--max-connections-per-address",
        "20",
        "--tls-handshake-timeout-secs",
        "3",
    ])
    .await;
    let pid = daemon.pid();
    let school = daemon.enrol("8612001").await;
    let addr: SocketAddr = daemon.url.trim_start_matches("https://").parse().unwrap();
    let before = fds(pid);
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();

    // In waves of 100, so that the kernel's accept queue (1,024) never
    // overflows while a busy test machine is slow to accept: a connection
    // it drops there never reaches the daemon at all.
    let mut flood = Vec::new();
    for wave in 0..11u32 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100u32 {
            set.spawn(idle_connection(addr, 2 + ((wave * 100 + i) % 10) as u8));
        }
        while let Some(conn) = set.join_next().await {
            flood.extend(conn.unwrap());
        }
    }
    assert!(flood.len() >= 1000, "only {} connected", flood.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = fds(pid);

    // A real client, on a new connection, while the flood holds its share.
    let real = Instant::now();
    let other = daemon.enrol("8614001").await;
    let keys = school.keys_of(&other.laestab).await;
    let data = ciphertext(300_000);
    let header = school.header_for(&other.laestab, &keys, &data);
    let wire = v1::PackHeader::from(&header);
    school.upload(&wire, &data, 64 * 1024).await.unwrap();
    let (_, back) = other.download(&wire.pack_id).await.unwrap();
    assert_eq!(back, data);
    let real_ms = real.elapsed().as_millis();

    // Every flood connection is closed by the daemon: the held ones when
    // their handshake times out.
    let mut reads = tokio::task::JoinSet::new();
    for mut conn in flood.drain(..) {
        reads.spawn(async move {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(8), conn.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        });
    }
    let held = reads.len();
    let mut closed = 0;
    while let Some(was_closed) = reads.join_next().await {
        closed += usize::from(was_closed.unwrap());
    }
    let cpu = cpu_ticks(pid) - cpu_before;
    let after = fds(pid);
    println!(
        "abuse-connections: {} idle connections from 10 addresses; daemon fds {before} before, {during} during (cap 10 x 20 held), {after} after; {closed} closed by the daemon; a real upload+download of 300 kB took {real_ms} ms; daemon CPU {cpu} ticks over {} ms; peak RSS {} KiB",
        held,
        started.elapsed().as_millis(),
        daemon.vm_hwm_kib()
    );
    assert!(during <= before + 200 + 20, "{during} fds during the flood");
    assert_eq!(closed, held);
    assert!(after <= before + 20, "{after} fds after the flood");
}

/// With a token: one school's long calls are capped per kind (Watch streams
/// and downloads here), other schools are not affected, and a place comes
/// back when a call ends.
#[tokio::test]
async fn issue16_one_school_cannot_hold_every_stream() {
    let daemon = Daemon::start_sqlite(&[
        "--school-max-watches",
        "4",
        "--school-max-downloads",
        "3",
        "--school-max-uploads",
        "3",
    ])
    .await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let mut watches = Vec::new();
    for _ in 0..4 {
        let w = a
            .exchange()
            .watch(a.req(v1::WatchRequest {}))
            .await
            .unwrap();
        watches.push(w.into_inner());
    }
    let refused = a
        .exchange()
        .watch(a.req(v1::WatchRequest {}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("4 Watch streams"),
        "{}",
        refused.message()
    );
    // Another school is not affected.
    let _theirs = b
        .exchange()
        .watch(b.req(v1::WatchRequest {}))
        .await
        .unwrap();

    // Downloads whose reader never reads: the fourth is refused.
    let keys = b.keys_of(&a.laestab).await;
    // Larger than the client's HTTP/2 windows (2 MB a stream, 5 MB a
    // connection), so an unread download really stalls on the server.
    let data = ciphertext(8_000_000);
    let header = b.header_for(&a.laestab, &keys, &data);
    let wire = v1::PackHeader::from(&header);
    b.upload(&wire, &data, 256 * 1024).await.unwrap();
    let rss_before = daemon.vm_rss_kib();
    let mut stalled = Vec::new();
    // On a connection of their own: unread, they fill its HTTP/2 window,
    // which would stall the school's other calls on the same connection.
    let stalling = a.via(&daemon.channel().await);
    for _ in 0..3 {
        let d = stalling
            .exchange()
            .download(a.req(v1::DownloadRequest {
                pack_id: wire.pack_id.clone(),
            }))
            .await
            .unwrap();
        stalled.push(d.into_inner());
    }
    let refused = stalling
        .exchange()
        .download(a.req(v1::DownloadRequest {
            pack_id: wire.pack_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_stream = daemon.vm_rss_kib().saturating_sub(rss_before) / 3;
    println!(
        "abuse-streams: 4 Watch streams and 3 unread downloads of an 8 MB pack held; the next of each refused; about {per_stream} KiB of daemon RSS per stalled download"
    );

    // Uploads that send their header and one chunk, then stall: the fourth
    // is refused at once.
    let rss_uploads = daemon.vm_rss_kib();
    let to_b = a.keys_of(&b.laestab).await;
    let mut stalled_uploads = Vec::new();
    for _ in 0..3 {
        let data = ciphertext(1_000_000);
        let header = v1::PackHeader::from(&a.header_for(&b.laestab, &to_b, &data));
        let mut messages = upload_messages(&header, &data, 256 * 1024);
        messages.truncate(2);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for m in messages {
            tx.send(m).await.unwrap();
        }
        let mut exchange = a.exchange();
        let request = a.req(tokio_stream::wrappers::ReceiverStream::new(rx));
        let call = tokio::spawn(async move { exchange.upload(request).await });
        stalled_uploads.push((tx, call));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = ciphertext(1000);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &to_b, &data));
    let refused = a.upload(&header, &data, 1000).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(
        refused.message().contains("3 uploads"),
        "{}",
        refused.message()
    );
    let per_upload = daemon.vm_rss_kib().saturating_sub(rss_uploads) / 3;

    // Meanwhile another school's transfer goes through.
    let c = daemon.enrol("8614002").await;
    let started = Instant::now();
    let data = ciphertext(300_000);
    let to_c = b.keys_of(&c.laestab).await;
    let header = v1::PackHeader::from(&b.header_for(&c.laestab, &to_c, &data));
    b.upload(&header, &data, 64 * 1024).await.unwrap();
    let (_, back) = c.download(&header.pack_id).await.unwrap();
    assert_eq!(back, data);
    let journey_ms = started.elapsed().as_millis();
    println!(
        "abuse-uploads: 3 stalled uploads held, the fourth refused; about {per_upload} KiB of daemon RSS each; another school's 300 kB upload and download took {journey_ms} ms meanwhile"
    );
    drop(stalled_uploads);

    // A Watch stream closed gives its place back.
    drop(watches.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match a.exchange().watch(a.req(v1::WatchRequest {})).await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("the place did not come back: {s}"),
        }
    }
    drop(stalled);
}

/// An upload that trickles (a chunk now and then, never idle long enough to
/// trip the idle timeout) is dropped once it falls below the minimum rate,
/// and nothing it staged is kept.
#[tokio::test]
async fn issue16_a_trickling_upload_is_cut_off() {
    let daemon = Daemon::start_sqlite(&[
        "--upload-idle-timeout-secs",
        "1",
        "--upload-min-bytes-per-sec",
        "100000",
    ])
    .await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(1_000_000);
    let header = a.header_for(&b.laestab, &keys, &data);
    let wire = v1::PackHeader::from(&header);
    let messages = upload_messages(&wire, &data, 1000);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // 300 kB at once (a chunk is staged), then 1 kB every 300 ms.
    tokio::spawn(async move {
        for (i, m) in messages.into_iter().enumerate() {
            if tx.send(m).await.is_err() {
                return;
            }
            if i > 300 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let started = Instant::now();
    let refused = a
        .exchange()
        .upload(a.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused}");
    assert!(
        refused.message().contains("too slow"),
        "{}",
        refused.message()
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    println!(
        "abuse-trickle: an upload of 300 kB then 1 kB every 300 ms was cut off after {} ms",
        took.as_millis()
    );
    let db = crate::common::open_db(&daemon.db_path()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks")
            .fetch_one(&db)
            .await
            .unwrap();
        // Its first chunk was staged in a file (a pack of a chunk or more).
        let (files, _) = crate::common::ciphertext_files(&daemon.data);
        let staged = rows + files as i64;
        if staged == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{staged} chunks still staged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
