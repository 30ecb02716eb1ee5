//! Tampering is detected (threat model, points 1 and 3). Real sealed packs
//! sent with the real `baton send`; then one byte is changed in every
//! region of a stored pack, behind the daemon's back in its SQLite
//! database: the age header (magic, recipient stanza, header MAC), the
//! payload nonce, the payload, the final tag, and each field of the signed
//! header (signature, dates, sizes, hash, sender and recipient key ids,
//! sender). `baton pull` refuses every one with an error and writes nothing
//! under OUT/<from>/. In transit, a TCP proxy between client and daemon
//! flips one byte of the server-to-client stream at chosen offsets: TLS
//! fails the connection, `baton pull` errors and writes nothing (a proxy
//! *inside* TLS would need a certificate the client trusts; a client
//! trusting another CA refuses to connect, see daemon_auth.rs). A receipt
//! altered on the server fails verification at the sender.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use baton::api::v1;
use common::Daemon;
use common::cli::{Home, enrol};
use common::reliability::{assert_daemon_holds_no_plaintext, distinctive_record, needles};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One way to alter a stored pack.
enum Alter {
    /// Flip a byte of the ciphertext at an offset (negative: from the end).
    Chunk(&'static str, isize),
    /// Change the stored header.
    Header(&'static str, fn(&mut v1::PackHeader)),
}

fn flip(bytes: &mut [u8], at: usize) {
    bytes[at] ^= 0x01;
}

fn cases(ciphertext: &[u8]) -> Vec<Alter> {
    let find = |needle: &[u8]| {
        ciphertext
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap() as isize
    };
    let stanza = find(b"-> X25519 ");
    let mac = find(b"\n--- ") + 5;
    // The header ends with the MAC line; the 16-byte payload nonce follows.
    let nonce = mac + 43 + 1;
    vec![
        Alter::Chunk("age magic", 3),
        Alter::Chunk("age recipient stanza", stanza + 12),
        Alter::Chunk("age header MAC", mac + 4),
        Alter::Chunk("payload nonce", nonce + 3),
        Alter::Chunk("payload, first chunk", nonce + 16 + 100),
        Alter::Chunk("payload, middle", ciphertext.len() as isize / 2),
        Alter::Chunk("payload, final tag", -1),
        Alter::Header("signature", |h| flip(&mut h.signature, 7)),
        Alter::Header("created_at_ms", |h| h.created_at_ms += 1),
        Alter::Header("ciphertext_sha256", |h| flip(&mut h.ciphertext_sha256, 0)),
        Alter::Header("ciphertext_length", |h| h.ciphertext_length -= 1),
        Alter::Header("sender_key_id", |h| {
            h.sender_key_id = format!("{}x", &h.sender_key_id[..h.sender_key_id.len() - 1])
        }),
        Alter::Header("recipient_key_ids", |h| h.recipient_key_ids.clear()),
        Alter::Header("from", |h| h.from = "8612002".into()),
        Alter::Header("kind", |h| h.kind = v1::PackKind::Safeguarding as i32),
    ]
}

fn pack_folder(root: &Path, serial: u32) -> std::path::PathBuf {
    let dir = root.join(format!("pack-{serial}"));
    std::fs::create_dir_all(&dir).unwrap();
    let record = distinctive_record("Tamper", 4646, serial);
    std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
    let report: Vec<u8> = (0..150_000u32).map(|i| (i % 239) as u8).collect();
    std::fs::write(dir.join("report.pdf"), report).unwrap();
    dir
}

fn nothing_written(out: &Path) -> bool {
    !out.join("8612001").exists() && !out.join("8612002").exists()
}

async fn pull_fails(home: &Home, id: &str, out: &Path) -> String {
    let result = home
        .baton(&["pull", id, "--out", out.to_str().unwrap()])
        .await;
    assert_eq!(result.status.code(), Some(1), "the pull should fail");
    String::from_utf8_lossy(&result.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_altered_byte_is_caught_at_rest_and_in_transit() {
    let daemon = Daemon::start(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _b = enrol(&daemon, root.path(), "8612002", "primary", &["staff"]).await;
    let s = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;

    const PACKS: u32 = 20;
    let mut args: Vec<String> = vec!["send".into(), "--to".into(), "8614001".into()];
    let mut all_needles = Vec::new();
    for serial in 0..PACKS {
        args.push(pack_folder(root.path(), serial).display().to_string());
        all_needles.extend(needles(&distinctive_record("Tamper", 4646, serial)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.ok(&args).await;
    let ids: Vec<String> = s
        .json(&["inbox", "--json"])
        .await
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), PACKS as usize);

    // (a) At rest: one pack per case, altered in the database.
    let pool = common::open_db(&daemon.db_path()).await;
    let (sample,): (Vec<u8>,) = sqlx::query_as(
        "SELECT c.data FROM pack_chunks c JOIN packs p ON p.upload_id = c.upload_id \
         WHERE p.pack_id = ? AND c.idx = 0",
    )
    .bind(&ids[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    let cases = cases(&sample);
    assert!(cases.len() + 3 <= ids.len());
    let mut report = Vec::new();
    let mut originals = Vec::new();
    for (case, id) in cases.iter().zip(&ids) {
        let name = match case {
            Alter::Chunk(name, at) => {
                let (upload_id, mut data): (String, Vec<u8>) = sqlx::query_as(
                    "SELECT c.upload_id, c.data FROM pack_chunks c JOIN packs p ON p.upload_id = c.upload_id \
                     WHERE p.pack_id = ? AND c.idx = 0",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
                let at = if *at < 0 {
                    data.len() as isize + at
                } else {
                    *at
                } as usize;
                flip(&mut data, at);
                sqlx::query("UPDATE pack_chunks SET data = ? WHERE upload_id = ? AND idx = 0")
                    .bind(&data)
                    .bind(&upload_id)
                    .execute(&pool)
                    .await
                    .unwrap();
                name
            }
            Alter::Header(name, change) => {
                let (bytes,): (Vec<u8>,) =
                    sqlx::query_as("SELECT header FROM packs WHERE pack_id = ?")
                        .bind(id)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                let mut header = v1::PackHeader::decode(bytes.as_slice()).unwrap();
                originals.push((id.clone(), bytes));
                change(&mut header);
                sqlx::query("UPDATE packs SET header = ? WHERE pack_id = ?")
                    .bind(header.encode_to_vec())
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
                name
            }
        };
        let out = root.path().join(format!("out-{id}"));
        let err = pull_fails(&s, id, &out).await;
        assert!(nothing_written(&out), "{name}: something was written");
        let first = err
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or("")
            .to_string();
        assert!(!first.is_empty(), "{name}: no error naming the pack: {err}");
        report.push(format!("{name}: {}", first.replace(id.as_str(), "ID")));
    }

    // (b) In transit: a proxy flipping one server-to-client byte.
    let clean = &ids[cases.len()];
    let (listener, proxy_url) = bind_proxy().await;
    let daemon_addr = daemon.url.trim_start_matches("https://").to_string();
    let config_path = s.dir.join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace(&daemon.url, &proxy_url)).unwrap();
    let offsets = [10usize, 200, 1_500, 4_000, 20_000, 100_000];
    let flip_at = Arc::new(AtomicUsize::new(0));
    let proxy = tokio::spawn(run_proxy(listener, daemon_addr, flip_at.clone()));
    let mut transit = Vec::new();
    for at in offsets {
        flip_at.store(at, Ordering::SeqCst);
        let out = root.path().join(format!("transit-{at}"));
        let err = pull_fails(&s, clean, &out).await;
        assert!(nothing_written(&out), "flip at {at}: something was written");
        transit.push(format!(
            "offset {at}: {}",
            err.lines()
                .last()
                .unwrap_or("")
                .replace(clean.as_str(), "ID")
        ));
    }
    proxy.abort();
    std::fs::write(&config_path, config).unwrap();
    // The untouched pack still pulls directly.
    let good = root.path().join("good");
    s.ok(&["pull", clean, "--out", good.to_str().unwrap()])
        .await;
    assert_eq!(std::fs::read_dir(good.join("8612001")).unwrap().count(), 1);

    // A receipt altered on the server fails verification at the sender.
    // (The altered headers are put back first: today one malformed stored
    // header makes the sender's whole `baton sent` listing fail.)
    for (id, bytes) in &originals {
        sqlx::query("UPDATE packs SET header = ? WHERE pack_id = ?")
            .bind(bytes)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    s.ok(&["ack", "--all-pulled"]).await;
    let (receipt,): (Vec<u8>,) = sqlx::query_as("SELECT receipt FROM packs WHERE pack_id = ?")
        .bind(clean)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut r = v1::Receipt::decode(receipt.as_slice()).unwrap();
    r.received_at_ms += 1;
    sqlx::query("UPDATE packs SET receipt = ? WHERE pack_id = ?")
        .bind(r.encode_to_vec())
        .bind(clean)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let sent = a.json(&["sent", "--json"]).await;
    let entry = sent.iter().find(|p| p["id"] == clean.as_str()).unwrap();
    assert_eq!(entry["receipt_verified"], false, "{entry}");
    assert_eq!(
        sent.iter()
            .filter(|p| p["receipt_verified"] == true)
            .count(),
        0,
        "only one pack was acknowledged"
    );

    let scanned = assert_daemon_holds_no_plaintext(&daemon, &all_needles);
    println!(
        "tamper: {} stored-pack alterations, all refused by baton pull with nothing written:\n  {}\n\
         in transit, {} single-byte flips of the server->client stream, all refused:\n  {}\n\
         altered receipt: receipt_verified false; plaintext scan: {} files, {} bytes, 0 hits",
        report.len(),
        report.join("\n  "),
        transit.len(),
        transit.join("\n  "),
        scanned.files,
        scanned.bytes
    );
}

async fn bind_proxy() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Forwards connections to `upstream`, flipping one byte of each
/// connection's server-to-client stream at the offset `flip_at` holds when
/// the connection is accepted (so a client's retry gets no clean path).
async fn run_proxy(listener: tokio::net::TcpListener, upstream: String, flip_at: Arc<AtomicUsize>) {
    loop {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
        let at = flip_at.load(Ordering::SeqCst);
        tokio::spawn(async move {
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
            let mut seen = 0usize;
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(got) = sr.read(&mut buf).await {
                if got == 0 {
                    break;
                }
                if (seen..seen + got).contains(&at) {
                    buf[at - seen] ^= 0x01;
                }
                seen += got;
                if cw.write_all(&buf[..got]).await.is_err() {
                    break;
                }
            }
            up.abort();
        });
    }
}
