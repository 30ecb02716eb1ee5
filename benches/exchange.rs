//! Benchmark: Baton against this machine's own ceilings, in one run.
//!
//! `cargo bench --bench exchange` (release build; cargo builds the `batond`
//! and `baton` binaries for a bench, so their release builds are what runs).
//! It starts a real `batond` (TLS, SQLite in a temporary directory; also
//! PostgreSQL when `BATON_TEST_DATABASE_URL` is set), enrols sending and
//! receiving schools, and measures:
//!
//! - **ingest**: concurrent uploads of real sealed 20 KB packs, then 1 MB
//!   and 10 MB (random ciphertext under correctly signed headers: the server
//!   cannot tell); packs/s, MB/s, p50/p99 latency, daemon CPU and peak RSS;
//! - **delivery**: receivers list, download, open and acknowledge every 20 KB pack;
//! - **ceilings**: raw sqlx SQLite inserts of the same bytes with the same
//!   durability (one transaction per pack, and batched) and a bare tonic
//!   service over the same TLS that only drains uploads; ingest / min(ceilings);
//! - **memory**: daemon peak RSS while 64 clients upload 10 MB packs at once,
//!   and for single uploads of 1 MB, 10 MB, 100 MB (and 1 GB, streamed and
//!   generated on the fly, with `BATON_BENCH_BIG=1`);
//! - **crypto**: seal and open MB/s beside the reference `age` CLI;
//! - **a class**: `baton send` / `pull --all` / `ack --all-pulled` of 30
//!   pupils beside tar + `age` + `sftp` to an OpenSSH server on loopback
//!   (skipped, saying why, when `sshd` or `age` is missing).
//!
//! Sizes: `BATON_BENCH_PACKS` (20 KB packs, default 2000), `BATON_BENCH_CLIENTS`
//! (concurrent uploads, default 32).

use std::error::Error;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::Laestab;
use baton::api::v1;
use baton::api::v1::enrolment_client::EnrolmentClient;
use baton::api::v1::exchange_client::ExchangeClient;
use baton::api::v1::exchange_server::{Exchange, ExchangeServer};
use baton::crypto::{Draft, Identity, Sink, open, seal};
use baton::keys::{PublicKey, Role, SchoolKey, enrol_statement, recipients_for};
use baton::pack::{
    AttachmentMeta, FORMAT_VERSION, Header, Kind, Manifest, PackId, Receipt, SignedHeader,
};
use baton::record::TransitionRecord;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// Fresh PostgreSQL databases on `BATON_TEST_DATABASE_URL` (shared with the tests).
#[path = "../tests/common/pgdb.rs"]
mod pgdb;

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// Upload chunk size, as the CLI sends.
const CHUNK: usize = 64 * 1024;
/// Message size limit for the bench's own clients and server.
const MAX_MESSAGE: usize = 8 * 1024 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- process stats

/// Seconds of CPU (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / clock_ticks(),
        _ => 0.0,
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A process's peak resident set (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .map_or(0.0, |kib: f64| kib / 1024.0)
}

/// Resets a process's peak RSS to its current RSS (Linux `clear_refs` 5).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- the daemon

/// A running `batond`; killed when dropped.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    ca: PathBuf,
    data: PathBuf,
    database_url: Option<String>,
    _dir: tempfile::TempDir,
}

fn batond() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_batond"));
    cmd.env_remove("BATON_CONFIG")
        .env_remove("BATON_DATA_DIR")
        .env_remove("BATON_LISTEN")
        .env_remove("BATON_LOG");
    cmd
}

impl Daemon {
    async fn start(database_url: Option<String>) -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let mut cmd = batond();
        if let Some(url) = &database_url {
            cmd.args(["--database-url", url]);
        }
        let mut child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-pack-bytes", &(2u64 << 30).to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("batond exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next_line().await?.ok_or("batond exited early")?;
        let url = first
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line: {first}"))?
            .to_string();
        let second = lines.next_line().await?.ok_or("batond exited early")?;
        let ca = PathBuf::from(
            second
                .strip_prefix("CA certificate: ")
                .ok_or_else(|| format!("unexpected second line: {second}"))?,
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            url,
            ca,
            data,
            database_url,
            _dir: dir,
        })
    }

    async fn admin(&self, args: &[&str]) -> Res<String> {
        let mut cmd = batond();
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        let out = cmd
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .await?;
        if !out.status.success() {
            return Err(
                format!("batond {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    async fn code(&self, laestab: &str) -> Res<String> {
        let out = self
            .admin(&[
                "admin", "school", "add", laestab, "--name", "Bench", "--phase", "primary",
                "--json",
            ])
            .await?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        Ok(json["code"].as_str().ok_or("no code")?.to_string())
    }

    async fn enrol(&self, laestab: &str) -> Res<School> {
        let code = self.code(laestab).await?;
        let identity = Identity::generate();
        let laestab = Laestab::parse(laestab)?;
        let key = school_key(&identity);
        let proof = identity
            .sign(&enrol_statement(&laestab, identity.key_id()))
            .to_vec();
        let resp = EnrolmentClient::new(channel(&self.url, &self.ca).await?)
            .redeem(v1::RedeemRequest {
                laestab: laestab.to_string(),
                code,
                key: Some(v1::Key::from(&key)),
                proof,
            })
            .await?
            .into_inner();
        Ok(School {
            laestab,
            identity,
            token: resp.token,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn channel(url: &str, ca: &Path) -> Res<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .domain_name("localhost");
    Ok(Channel::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect()
        .await?)
}

fn exchange(channel: &Channel) -> ExchangeClient<Channel> {
    ExchangeClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn school_key(identity: &Identity) -> SchoolKey {
    SchoolKey {
        public: identity.public(),
        label: "bench".into(),
        roles: vec![Role::Dsl, Role::Staff],
        created_at_ms: 0,
        revoked_at_ms: None,
    }
}

/// An enrolled school as its client sees it.
struct School {
    laestab: Laestab,
    identity: Identity,
    token: String,
}

fn req<T>(token: &str, msg: T) -> Res<Request<T>> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

// ---------------------------------------------------------------- packs

/// A valid UPN with the given serial.
fn upn(serial: u32) -> String {
    let body = format!("86120012{:01}{:03}", serial / 1000 % 10, serial % 1000);
    let check = baton::upn::check_letter(body.as_bytes());
    format!("{}{body}", char::from(check))
}

fn record(serial: u32) -> TransitionRecord {
    TransitionRecord {
        upn: upn(serial),
        surname: format!("Bench-{serial}"),
        forename: "Pupil".into(),
        dob: "2015-03-04".into(),
        sex: "F".into(),
        notes: "A pastoral note of a sentence or two.".into(),
        ..Default::default()
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = rand::random::<u64>() | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// Seals `attachment` (one file) into a real pack; returns header and ciphertext.
fn seal_pack(
    from: &School,
    to: Laestab,
    recipients: &[SchoolKey],
    serial: u32,
    attachment: &[u8],
) -> Res<(SignedHeader, Vec<u8>)> {
    let manifest = Manifest {
        record: record(serial),
        ctf_pupil_xml: None,
        attachments: vec![AttachmentMeta {
            name: "report.pdf".into(),
            media_type: "application/pdf".into(),
            size: attachment.len() as u64,
            sha256: Sha256::digest(attachment).into(),
        }],
    };
    let draft = Draft {
        pack_id: PackId::new(),
        from: from.laestab,
        to,
        kind: Kind::Transfer,
        created_at_ms: 1,
    };
    let (header, out) = seal(
        &draft,
        &manifest,
        |_| Ok(Cursor::new(attachment)),
        recipients,
        &from.identity,
        Vec::with_capacity(attachment.len() + 1024),
    )?;
    Ok((header, out))
}

/// A signed header for ciphertext of `len` bytes hashing to `sha256`.
fn header_for(
    from: &School,
    to: Laestab,
    keys: &[SchoolKey],
    len: u64,
    sha256: [u8; 32],
) -> Res<SignedHeader> {
    Ok(from.identity.sign_header(Header {
        format_version: FORMAT_VERSION,
        pack_id: PackId::new(),
        from: from.laestab,
        to,
        kind: Kind::Transfer,
        created_at_ms: 1,
        ciphertext_len: len,
        ciphertext_sha256: sha256,
        sender_key_id: from.identity.key_id(),
        recipient_key_ids: recipients_for(Kind::Transfer, keys)
            .iter()
            .map(|k| k.key_id())
            .collect(),
    })?)
}

/// Where an upload's ciphertext comes from.
#[derive(Clone)]
enum Body {
    /// Bytes in memory (shared between uploads of the same size).
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes generated on the fly from `seed` (never held whole).
    Generated { seed: u64, len: u64 },
}

/// Generated ciphertext, one chunk at a time.
struct Generator {
    x: u64,
    left: u64,
}

impl Iterator for Generator {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        let mut out = vec![0u8; n];
        for c in out.chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            c.copy_from_slice(&self.x.to_le_bytes()[..c.len()]);
        }
        Some(out)
    }
}

impl Body {
    fn chunks(&self) -> Box<dyn Iterator<Item = Vec<u8>> + Send> {
        match self {
            Body::Bytes(b) => {
                let b = b.clone();
                let n = b.len().div_ceil(CHUNK);
                Box::new((0..n).map(move |i| b[i * CHUNK..((i + 1) * CHUNK).min(b.len())].to_vec()))
            }
            Body::Generated { seed, len } => Box::new(Generator {
                x: *seed | 1,
                left: *len,
            }),
        }
    }
}

/// One upload to do: who sends, the header, the bytes.
#[derive(Clone)]
struct Job {
    sender: usize,
    header: v1::PackHeader,
    body: Body,
}

/// The messages of an upload, made as they are sent.
fn messages(job: &Job) -> impl Iterator<Item = v1::UploadRequest> + Send + 'static {
    use v1::upload_request::Part;
    let head = std::iter::once(v1::UploadRequest {
        part: Some(Part::Header(job.header.clone())),
    });
    head.chain(job.body.chunks().map(chunk_message))
}

fn chunk_message(c: Vec<u8>) -> v1::UploadRequest {
    v1::UploadRequest {
        part: Some(v1::upload_request::Part::Chunk(c)),
    }
}

async fn upload_one(client: &mut ExchangeClient<Channel>, token: &str, job: &Job) -> Res<()> {
    let request = req(token, tokio_stream::iter(messages(job)))?;
    client.upload(request).await?;
    Ok(())
}

/// Results of one concurrent upload run.
struct Run {
    packs: usize,
    bytes: u64,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.packs as f64 / self.wall.as_secs_f64()
    }
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
    fn line(&self, label: &str) -> String {
        format!(
            "{label}: {} packs in {:.2} s = {:.0} packs/s, {:.1} MB/s, p50 {:.1} ms, p99 {:.1} ms",
            self.packs,
            self.wall.as_secs_f64(),
            self.rate(),
            self.mb_s(),
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99)
        )
    }
}

/// Uploads every job with `clients` in flight; senders' tokens by index.
async fn upload_all(
    channels: &[Channel],
    tokens: &[String],
    jobs: Vec<Job>,
    clients: usize,
) -> Res<Run> {
    let packs = jobs.len();
    let bytes = jobs.iter().map(|j| j.header.ciphertext_length).sum();
    let queue = Arc::new(Mutex::new(jobs));
    let tokens = Arc::new(tokens.to_vec());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let queue = queue.clone();
        let tokens = tokens.clone();
        let mut client = exchange(&channels[i % channels.len()]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(job) = queue.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                upload_one(&mut client, &tokens[job.sender], &job).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let wall = start.elapsed();
    latencies.sort();
    Ok(Run {
        packs,
        bytes,
        wall,
        latencies,
    })
}

// ---------------------------------------------------------------- delivery

/// A sink that throws opened attachments away (after they are checked).
struct Discard;

impl Sink for Discard {
    fn create(&mut self, _: usize, _: &AttachmentMeta) -> std::io::Result<Box<dyn Write + '_>> {
        Ok(Box::new(std::io::sink()))
    }
}

/// Every receiver lists, downloads, opens and acknowledges all its packs.
async fn deliver(
    url: &str,
    ca: &Path,
    receivers: Vec<Arc<School>>,
    senders: Arc<Vec<PublicKey>>,
    clients: usize,
) -> Res<Run> {
    let start = Instant::now();
    let mut work = Vec::new();
    for (r, school) in receivers.iter().enumerate() {
        let mut client = exchange(&channel(url, ca).await?);
        let mut token = String::new();
        loop {
            let page = client
                .inbox(req(
                    &school.token,
                    v1::InboxRequest {
                        page_size: 500,
                        page_token: token.clone(),
                    },
                )?)
                .await?
                .into_inner();
            for entry in page.packs {
                if let Some(h) = entry.header {
                    work.push((r, h));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    let packs = work.len();
    let bytes = work.iter().map(|(_, h)| h.ciphertext_length).sum();
    let queue = Arc::new(Mutex::new(work));
    let receivers = Arc::new(receivers);
    let mut tasks = Vec::new();
    let chan = channel(url, ca).await?;
    for _ in 0..clients {
        let (queue, receivers, senders) = (queue.clone(), receivers.clone(), senders.clone());
        let mut client = exchange(&chan);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some((r, wire)) = queue.lock().await.pop() else {
                    break;
                };
                let t = Instant::now();
                let school = receivers[r].clone();
                let mut stream = client
                    .download(req(
                        &school.token,
                        v1::DownloadRequest {
                            pack_id: wire.pack_id.clone(),
                        },
                    )?)
                    .await?
                    .into_inner();
                let mut data = Vec::with_capacity(wire.ciphertext_length as usize);
                while let Some(msg) = stream.message().await? {
                    if let Some(v1::download_response::Part::Chunk(c)) = msg.part {
                        data.extend_from_slice(&c);
                    }
                }
                let signed = SignedHeader::try_from(&wire)?;
                let (senders2, school2) = (senders.clone(), school.clone());
                let signed2 = signed.clone();
                tokio::task::spawn_blocking(move || {
                    open(
                        &signed2,
                        &senders2,
                        &school2.identity,
                        Cursor::new(data),
                        &mut Discard,
                    )
                    .map(|_| ())
                })
                .await??;
                let h = signed.header();
                let receipt = school.identity.sign_receipt(Receipt {
                    pack_id: h.pack_id,
                    ciphertext_sha256: h.ciphertext_sha256,
                    received_at_ms: 2,
                    recipient_key_id: school.identity.key_id(),
                })?;
                client
                    .acknowledge(req(
                        &school.token,
                        v1::AcknowledgeRequest {
                            receipt: Some(v1::Receipt::from(&receipt)),
                        },
                    )?)
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    latencies.sort();
    Ok(Run {
        packs,
        bytes,
        wall: start.elapsed(),
        latencies,
    })
}

// ---------------------------------------------------------------- ceilings

/// Raw sqlx SQLite inserts of `blobs` (WAL, synchronous=FULL): rows/s with
/// one transaction per row, and with `batch` rows per transaction.
async fn storage_ceiling(blobs: &[Arc<Vec<u8>>], batch: usize) -> Res<(f64, f64)> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("ceiling.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(15));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE chunks (upload_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (upload_id, idx))")
        .execute(&pool)
        .await?;
    let start = Instant::now();
    for (i, blob) in blobs.iter().enumerate() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO chunks (upload_id, idx, data) VALUES (?, 0, ?)")
            .bind(format!("one-{i}"))
            .bind(blob.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let one = blobs.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for (g, group) in blobs.chunks(batch).enumerate() {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for (i, blob) in group.iter().enumerate() {
            sqlx::query("INSERT INTO chunks (upload_id, idx, data) VALUES (?, 0, ?)")
                .bind(format!("batch-{g}-{i}"))
                .bind(blob.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let batched = blobs.len() as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok((one, batched))
}

/// An Exchange service that only drains uploads: the transport ceiling.
struct Drain;

type Empty<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl Exchange for Drain {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        let mut stream = request.into_inner();
        let mut bytes = 0usize;
        while let Some(msg) = stream.message().await? {
            if let Some(v1::upload_request::Part::Chunk(c)) = msg.part {
                bytes += c.len();
            }
        }
        Ok(Response::new(v1::UploadResponse {
            pack_id: bytes.to_string(),
            already_stored: false,
            uploaded_at_ms: 0,
        }))
    }
    async fn inbox(
        &self,
        _: Request<v1::InboxRequest>,
    ) -> Result<Response<v1::InboxResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type DownloadStream = Empty<v1::DownloadResponse>;
    async fn download(
        &self,
        _: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn acknowledge(
        &self,
        _: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn sent(
        &self,
        _: Request<v1::SentRequest>,
    ) -> Result<Response<v1::SentResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type WatchStream = Empty<v1::WatchEvent>;
    async fn watch(
        &self,
        _: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

/// Starts the draining service with the daemon's own TLS certificate; returns its URL.
async fn transport_server(daemon: &Daemon) -> Res<String> {
    let tls = daemon.data.join("tls");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(tls.join("server.pem"))?,
        std::fs::read(tls.join("server-key.pem"))?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .add_service(
            ExchangeServer::new(Drain)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    Ok(format!("https://127.0.0.1:{}", addr.port()))
}

// ---------------------------------------------------------------- crypto

fn time_it(mut f: impl FnMut() -> Res<()>, min: Duration, min_iters: u32) -> Res<f64> {
    let start = Instant::now();
    let mut n = 0u32;
    while n < min_iters || start.elapsed() < min {
        f()?;
        n += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(n))
}

fn run(cmd: &mut std::process::Command) -> Res<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn crypto(from: &School) -> Res<()> {
    println!("\n== crypto: seal and open (baton library) beside the age CLI (a process per file)");
    let dir = tempfile::tempdir()?;
    let have_age = have("age") && have("age-keygen");
    let cli_key = dir.path().join("cli.key");
    let mut cli_recipient = String::new();
    if have_age {
        run(std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(&cli_key))?;
        let out = std::process::Command::new("age-keygen")
            .arg("-y")
            .arg(&cli_key)
            .output()?;
        cli_recipient = String::from_utf8(out.stdout)?.trim().to_string();
    } else {
        println!("age CLI not found: the age columns are skipped (apt-get install -y age)");
    }
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let to = Laestab::parse("8619001")?;
    println!(
        "{:>7} {:>4} | {:>10} {:>10} | {:>10} {:>10} | {:>6} {:>6}",
        "size", "rcpt", "seal MB/s", "open MB/s", "age -e MB/s", "age -d MB/s", "seal×", "open×"
    );
    for size in [20 * 1024usize, 10 * 1024 * 1024] {
        let plain = random_bytes(size);
        let plain_file = dir.path().join("plain");
        std::fs::write(&plain_file, &plain)?;
        for n in [1usize, 3] {
            let keys: Vec<SchoolKey> = ids[..n].iter().map(school_key).collect();
            let (min, iters) = if size > 1 << 20 {
                (Duration::from_secs(1), 3)
            } else {
                (Duration::from_millis(500), 50)
            };
            let mut sealed = None;
            let seal_s = time_it(
                || {
                    sealed = Some(seal_pack(from, to, &keys, 1, &plain)?);
                    Ok(())
                },
                min,
                iters,
            )?;
            let (header, ct) = sealed.ok_or("nothing sealed")?;
            let senders = vec![from.identity.public()];
            let open_s = time_it(
                || {
                    open(
                        &header,
                        &senders,
                        &ids[0],
                        Cursor::new(ct.as_slice()),
                        &mut Discard,
                    )?;
                    Ok(())
                },
                min,
                iters,
            )?;
            let mb = size as f64 / 1e6;
            let (seal_mb, open_mb) = (mb / seal_s, mb / open_s);
            if have_age {
                let enc = dir.path().join("enc.age");
                let mut recipients = vec![cli_recipient.clone()];
                recipients.extend(
                    keys[1..]
                        .iter()
                        .map(|k| k.public.age_recipient().to_string()),
                );
                let age_iters = if size > 1 << 20 { 3 } else { 30 };
                let enc_s = time_it(
                    || {
                        let mut cmd = std::process::Command::new("age");
                        for r in &recipients {
                            cmd.args(["-r", r]);
                        }
                        run(cmd.arg("-o").arg(&enc).arg(&plain_file))
                    },
                    Duration::ZERO,
                    age_iters,
                )?;
                let dec = dir.path().join("dec");
                let dec_s = time_it(
                    || {
                        run(std::process::Command::new("age")
                            .arg("-d")
                            .arg("-i")
                            .arg(&cli_key)
                            .arg("-o")
                            .arg(&dec)
                            .arg(&enc))
                    },
                    Duration::ZERO,
                    age_iters,
                )?;
                let (age_e, age_d) = (mb / enc_s, mb / dec_s);
                println!(
                    "{:>7} {:>4} | {:>10.1} {:>10.1} | {:>11.1} {:>11.1} | {:>6.2} {:>6.2}",
                    human(size as u64),
                    n,
                    seal_mb,
                    open_mb,
                    age_e,
                    age_d,
                    seal_mb / age_e,
                    open_mb / age_d
                );
            } else {
                println!(
                    "{:>7} {:>4} | {:>10.1} {:>10.1}",
                    human(size as u64),
                    n,
                    seal_mb,
                    open_mb
                );
            }
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MB", bytes >> 20)
    } else {
        format!("{} KB", bytes >> 10)
    }
}

// ---------------------------------------------------------------- a class

async fn baton_cli(home: &Path, args: &[&str]) -> Res<String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .env("BATON_HOME", home)
        .env_remove("BATON_PASSPHRASE")
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "baton {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

async fn cli_home(daemon: &Daemon, root: &Path, laestab: &str) -> Res<PathBuf> {
    let code = daemon.code(laestab).await?;
    let home = root.join(format!("home-{laestab}"));
    let ca = daemon.ca.display().to_string();
    baton_cli(
        &home,
        &[
            "init",
            "--server",
            &daemon.url,
            "--ca",
            &ca,
            "--school",
            laestab,
            "--code",
            &code,
        ],
    )
    .await?;
    Ok(home)
}

fn sh(script: &str) -> Res<()> {
    run(std::process::Command::new("sh").args(["-ec", script]))
}

async fn class(daemon: &Daemon) -> Res<()> {
    println!("\n== a class: 30 pupils (record.json + a 200 KB PDF-like file each)");
    let root = tempfile::tempdir()?;
    let sender = cli_home(daemon, root.path(), "8615001").await?;
    let receiver = cli_home(daemon, root.path(), "8616001").await?;
    let packs = root.path().join("packs");
    let mut folders = Vec::new();
    for serial in 0..30u32 {
        let dir = packs.join(format!("pupil-{serial:02}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("record.json"), record(serial).to_json())?;
        let mut pdf = b"%PDF-1.4\n".to_vec();
        pdf.extend(random_bytes(200 * 1024 - pdf.len()));
        std::fs::write(dir.join("profile.pdf"), pdf)?;
        folders.push(dir.display().to_string());
    }
    let mut args = vec!["send", "--to", "8616001"];
    args.extend(folders.iter().map(String::as_str));
    let t = Instant::now();
    baton_cli(&sender, &args).await?;
    let send_s = t.elapsed().as_secs_f64();
    let out = root.path().join("pulled");
    let out_s = out.display().to_string();
    let t = Instant::now();
    baton_cli(&receiver, &["pull", "--all", "--out", &out_s]).await?;
    baton_cli(&receiver, &["ack", "--all-pulled"]).await?;
    let receive_s = t.elapsed().as_secs_f64();
    println!("baton send (30 packs):                  {send_s:.2} s");
    println!("baton pull --all + ack --all-pulled:    {receive_s:.2} s");

    let why = if !have("age") || !have("age-keygen") {
        Some("the age CLI is not installed (apt-get install -y age)")
    } else if !Path::new("/usr/sbin/sshd").exists() || !have("sftp") || !have("ssh-keygen") {
        Some("openssh-server is not installed (apt-get install -y openssh-server openssh-client)")
    } else {
        None
    };
    if let Some(why) = why {
        println!("tar + age + sftp comparison skipped: {why}");
        return Ok(());
    }
    let Some((send_sftp, receive_sftp)) = sftp_class(root.path(), &packs).await? else {
        return Ok(());
    };
    println!(
        "tar + age + sftp put (30 packs):        {send_sftp:.2} s  (baton / script = {:.2})",
        send_s / send_sftp
    );
    println!(
        "sftp get + age -d + untar:              {receive_sftp:.2} s  (baton / script = {:.2})",
        receive_s / receive_sftp
    );
    Ok(())
}

/// What a trust's IT could script today: returns (send, receive) seconds,
/// or `None` (saying why) when sshd cannot run here.
async fn sftp_class(root: &Path, packs: &Path) -> Res<Option<(f64, f64)>> {
    let ssh = root.join("ssh");
    std::fs::create_dir_all(&ssh)?;
    let d = ssh.display();
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {d}/host_key; ssh-keygen -q -t ed25519 -N '' -f {d}/client_key; \
         cp {d}/client_key.pub {d}/authorized_keys; chmod 600 {d}/authorized_keys; \
         mkdir -p /run/sshd {d}/remote; age-keygen -o {d}/school.key 2>/dev/null"
    ))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = ssh.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin yes\nPidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\n"
        ),
    )?;
    let mut sshd = tokio::process::Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .args(["-p", &port.to_string()])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let _ = sshd.start_kill();
        println!("tar + age + sftp comparison skipped: sshd did not start (are we root?)");
        return Ok(None);
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let sftp = format!(
        "sftp -q -b {d}/batch -i {d}/client_key -P {port} -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {user}@127.0.0.1"
    );
    let p = packs.display();
    let t = Instant::now();
    sh(&format!(
        "R=$(age-keygen -y {d}/school.key); mkdir -p {d}/out; cd {p}; \
         : > {d}/batch; echo 'cd {d}/remote' >> {d}/batch; \
         for f in *; do tar cf - \"$f\" | age -r \"$R\" -o {d}/out/\"$f\".tar.age; \
         echo \"put {d}/out/$f.tar.age\" >> {d}/batch; done; {sftp}"
    ))?;
    let send = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sh(&format!(
        "mkdir -p {d}/in {d}/untar; printf 'cd {d}/remote\\nlcd {d}/in\\nget *.tar.age\\n' > {d}/batch; {sftp}; \
         cd {d}/in; for f in *.tar.age; do age -d -i {d}/school.key \"$f\" | tar xf - -C {d}/untar; done; \
         test $(ls {d}/untar | wc -l) -eq 30"
    ))?;
    let receive = t.elapsed().as_secs_f64();
    let _ = sshd.start_kill();
    Ok(Some((send, receive)))
}

// ---------------------------------------------------------------- main

/// Ingest, delivery, ceilings and memory on one daemon.
async fn backend(label: &str, daemon: &Daemon, packs: usize, clients: usize) -> Res<()> {
    println!("\n== {label}: batond pid {} at {}", daemon.pid, daemon.url);
    let (s, r) = (4usize, 4usize);
    let mut senders = Vec::new();
    for i in 0..s {
        senders.push(Arc::new(
            daemon.enrol(&format!("86{:02}{:03}", 12, 100 + i)).await?,
        ));
    }
    let mut receivers = Vec::new();
    for i in 0..r {
        receivers.push(Arc::new(
            daemon.enrol(&format!("86{:02}{:03}", 14, 100 + i)).await?,
        ));
    }
    let receiver_keys: Vec<Vec<SchoolKey>> = receivers
        .iter()
        .map(|r| vec![school_key(&r.identity)])
        .collect();
    let tokens: Vec<String> = senders.iter().map(|s| s.token.clone()).collect();
    let mut channels = Vec::new();
    for _ in 0..s {
        channels.push(channel(&daemon.url, &daemon.ca).await?);
    }

    // Real sealed 20 KB packs, sealed before the clock starts.
    let attachment = random_bytes(19 * 1024);
    let mut jobs = Vec::with_capacity(packs);
    let mut blobs = Vec::with_capacity(packs);
    for i in 0..packs {
        let (from, to) = (i % s, i % r);
        let (header, ct) = seal_pack(
            &senders[from],
            receivers[to].laestab,
            &receiver_keys[to],
            i as u32,
            &attachment,
        )?;
        let ct = Arc::new(ct);
        blobs.push(ct.clone());
        jobs.push(Job {
            sender: from,
            header: v1::PackHeader::from(&header),
            body: Body::Bytes(ct),
        });
    }
    let pack_bytes = blobs.first().map_or(0, |b| b.len());
    let transport_jobs = jobs.clone();

    let cpu0 = cpu_seconds(daemon.pid);
    reset_peak(daemon.pid);
    let ingest = upload_all(&channels, &tokens, jobs, clients).await?;
    let cpu = cpu_seconds(daemon.pid) - cpu0;
    println!(
        "{} (packs of {pack_bytes} bytes, {clients} in flight, {s} senders)",
        ingest.line("ingest 20 KB")
    );
    println!(
        "  daemon CPU {cpu:.2} s ({:.0} µs a pack), peak RSS {:.1} MiB",
        cpu / packs as f64 * 1e6,
        peak_rss_mib(daemon.pid)
    );

    let senders_pub = Arc::new(
        senders
            .iter()
            .map(|s| s.identity.public())
            .collect::<Vec<_>>(),
    );
    let cpu0 = cpu_seconds(daemon.pid);
    let delivery = deliver(
        &daemon.url,
        &daemon.ca,
        receivers.clone(),
        senders_pub,
        clients,
    )
    .await?;
    println!(
        "{} ({r} receivers: list, download, open, ack)",
        delivery.line("delivery 20 KB")
    );
    println!("  daemon CPU {:.2} s", cpu_seconds(daemon.pid) - cpu0);

    // Ceilings, same bytes.
    let (one, batched) = storage_ceiling(&blobs, 100).await?;
    println!(
        "storage ceiling (sqlx SQLite, WAL, synchronous=FULL, same bytes): one tx a pack {one:.0}/s; 100 a tx {batched:.0}/s"
    );
    let transport_url = transport_server(daemon).await?;
    let mut tchannels = Vec::new();
    for _ in 0..s {
        tchannels.push(channel(&transport_url, &daemon.ca).await?);
    }
    let transport = upload_all(&tchannels, &tokens, transport_jobs, clients).await?;
    println!(
        "{}",
        transport.line("transport ceiling (bare tonic + rustls, drain only)")
    );
    let rate = ingest.rate();
    let best_storage = one.max(batched);
    let floor = best_storage.min(transport.rate());
    println!(
        "ingest / min(ceilings) = {rate:.0} / {floor:.0} = {:.2}; ingest / storage (one tx a pack) = {:.2}; ingest / storage (batched) = {:.2}",
        rate / floor,
        rate / one,
        rate / batched
    );
    println!(
        "BUDGET ingest ≥ 0.5 × storage ceiling (batched, same durability): {}",
        if rate >= 0.5 * batched {
            "met"
        } else {
            "MISSED"
        }
    );

    // Larger packs.
    let sender0 = &senders[0];
    for (size, n, k) in [(1usize << 20, 200usize, clients), (10 << 20, 64, 64)] {
        let body = Arc::new(random_bytes(size));
        let sha: [u8; 32] = Sha256::digest(body.as_slice()).into();
        let mut jobs = Vec::new();
        for i in 0..n {
            let to = i % r;
            let header = header_for(
                sender0,
                receivers[to].laestab,
                &receiver_keys[to],
                size as u64,
                sha,
            )?;
            jobs.push(Job {
                sender: 0,
                header: v1::PackHeader::from(&header),
                body: Body::Bytes(body.clone()),
            });
        }
        let cpu0 = cpu_seconds(daemon.pid);
        reset_peak(daemon.pid);
        let run = upload_all(&channels, &tokens, jobs, k).await?;
        let peak = peak_rss_mib(daemon.pid);
        println!(
            "{} ({k} in flight)",
            run.line(&format!("ingest {}", human(size as u64)))
        );
        println!(
            "  daemon CPU {:.2} s, peak RSS {peak:.1} MiB",
            cpu_seconds(daemon.pid) - cpu0
        );
        if size == 10 << 20 {
            println!(
                "BUDGET peak RSS < 100 MB with 64 uploads of 10 MB at once: {peak:.1} MiB, {}",
                if peak * 1.048_576 < 100.0 {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }

    // One upload at a time, growing: peak RSS should stay flat.
    let mut sizes: Vec<u64> = vec![1 << 20, 10 << 20, 100 << 20];
    if std::env::var("BATON_BENCH_BIG").is_ok_and(|v| v == "1") {
        sizes.push(1 << 30);
    }
    for size in sizes {
        let seed = rand::random::<u64>();
        let mut hasher = Sha256::new();
        for c in (Body::Generated { seed, len: size }).chunks() {
            hasher.update(&c);
        }
        let header = header_for(
            sender0,
            receivers[0].laestab,
            &receiver_keys[0],
            size,
            hasher.finalize().into(),
        )?;
        let job = Job {
            sender: 0,
            header: v1::PackHeader::from(&header),
            body: Body::Generated { seed, len: size },
        };
        reset_peak(daemon.pid);
        let run = upload_all(&channels, &tokens, vec![job], 1).await?;
        println!(
            "single streamed upload of {:>6}: {:.2} s, {:.0} MB/s, daemon peak RSS {:.1} MiB",
            human(size),
            run.wall.as_secs_f64(),
            run.mb_s(),
            peak_rss_mib(daemon.pid)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let packs = env_usize("BATON_BENCH_PACKS", 2000);
    let clients = env_usize("BATON_BENCH_CLIENTS", 32);
    println!(
        "baton exchange bench: {} cores, {packs} packs of 20 KB, {clients} clients",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let sqlite = Daemon::start(None).await?;
    backend("SQLite", &sqlite, packs, clients).await?;
    crypto(&sqlite.enrol("8618001").await?)?;
    class(&sqlite).await?;
    drop(sqlite);
    match pgdb::TestDb::from_env().await {
        Some(db) => {
            let pg = Daemon::start(Some(db.url.clone())).await?;
            backend("PostgreSQL", &pg, packs, clients).await?;
            drop(pg);
            drop(db);
        }
        None => println!("\nPostgreSQL skipped: BATON_TEST_DATABASE_URL is not set"),
    }
    Ok(())
}
