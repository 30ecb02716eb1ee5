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
//!   then download the 1 MB and 10 MB packs as `baton pull` fetches large
//!   ones (MB/s, daemon CPU a MB beside ingest's);
//! - **results day**: 20 KB uploads while receivers deliver a backlog of as
//!   many, each side's rate beside its rate alone;
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
//! - **scale**: `Inbox` and `Sent` page latency and query plans with a
//!   million packs in the store.
//!
//! Sizes: `BATON_BENCH_PACKS` (20 KB packs, default 2000), `BATON_BENCH_CLIENTS`
//! (concurrent uploads, default 32), `BATON_BENCH_SCALE` (packs in the store
//! for the listing figures, default 1,000,000; 0 skips them),
//! `BATON_BENCH_1MB_PACKS` (packs in the 1 MB phase, default 200),
//! `BATON_BENCH_10MB_RUNS` (the 64 × 10 MB phase and its ceiling this many
//! times on the same daemon, default 1: more figures a run when comparing
//! builds' large-pack paths), `BATON_BENCH_DRAIN_FRAME` (the largest
//! HTTP/2 frame the transport ceiling's drain allows, default HTTP/2's 16
//! KiB; the daemon allows 64 KiB). `BATON_BENCH_DIRECTORY_KEY=1` runs the SQLite
//! ingest, delivery and ceilings a second time on a daemon with a trust
//! directory key, every bench key approved by it (each upload then checks
//! endorsements too).

use std::error::Error;
use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::Laestab;
use baton::api::v1;
use baton::api::v1::exchange_client::ExchangeClient;
use baton::api::v1::exchange_server::{Exchange, ExchangeServer};
use baton::crypto::{Draft, Identity, Sink, open, seal};
use baton::keys::{PublicKey, Role, SchoolKey};
use baton::pack::recipients_for;
use baton::pack::{
    AttachmentMeta, FORMAT_VERSION, Header, Kind, Manifest, PackId, Receipt, SignedHeader,
};
use baton::record::TransitionRecord;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// The integration tests' helpers (a real `batond`, enrolled schools, TLS
/// channels, fresh PostgreSQL databases), shared rather than copied.
#[path = "../../tests/it/common/mod.rs"]
#[allow(
    unused_imports,
    unused_macros,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod common;

use common::{Daemon, School, tls_channel, with_token};

/// The bench daemon's flags: packs up to 2 GiB.
/// Large packs allowed, and one school may hold the bench's 32 (or 64)
/// uploads at once: the bench measures the daemon, not the per-school cap
/// (16 by default) that keeps one school from crowding out the others.
const BIG_PACKS: &[&str] = &[
    "--max-pack-bytes",
    "2147483648",
    "--school-max-uploads",
    "64",
    "--school-max-downloads",
    "64",
];

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// Upload message size, as `baton send` sends (`client/commands/send/job.rs`).
const CHUNK: usize = 256 * 1024;
/// Message size limit for the bench's own clients and server.
const MAX_MESSAGE: usize = 8 * 1024 * 1024;

mod ceilings;
mod class;
mod crypto;
mod daemon;
mod delivery;
mod ingest;
mod measure;
mod mixed;
mod scale;
mod split;

use ceilings::*;
use class::*;
use crypto::*;
use daemon::*;
use delivery::*;
use ingest::*;
use measure::*;
use mixed::*;
use scale::*;
use split::*;

/// A backend's daemon, its schools and their connections, as the 20 KB
/// phases after the first use them.
pub(crate) struct Parties<'a> {
    pub(crate) daemon: &'a Daemon,
    pub(crate) senders: &'a [Arc<School>],
    pub(crate) receivers: &'a [Arc<School>],
    pub(crate) receiver_keys: &'a [Vec<SchoolKey>],
    /// A connection a sending school.
    pub(crate) channels: &'a [Channel],
    /// The sending schools' tokens, in the same order.
    pub(crate) tokens: &'a [String],
}

impl Parties<'_> {
    /// `packs` new sealed 20 KB packs from the senders to the receivers.
    pub(crate) fn sealed(&self, packs: usize) -> Res<Vec<Job>> {
        sealed_jobs(self.senders, self.receivers, self.receiver_keys, packs)
    }

    /// The receivers deliver every small pack waiting for them.
    pub(crate) async fn deliver(&self, clients: usize) -> Res<Run> {
        let senders = Arc::new(self.senders.iter().map(|s| s.identity.public()).collect());
        deliver(
            &self.daemon.url,
            &self.daemon.ca,
            self.receivers.to_vec(),
            senders,
            clients,
        )
        .await
    }
}

/// Ingest, delivery, ceilings and memory on one daemon.
async fn backend(
    label: &str,
    daemon: &Daemon,
    packs: usize,
    clients: usize,
    directory_secret: Option<&Path>,
) -> Res<()> {
    println!(
        "\n== {label}: batond pid {} at {}",
        daemon.pid(),
        daemon.url
    );
    let (s, r) = (4usize, 4usize);
    let mut senders = Vec::new();
    for i in 0..s {
        senders.push(Arc::new(
            daemon.enrol(&format!("86{:02}{:03}", 12, 100 + i)).await,
        ));
    }
    let mut receivers = Vec::new();
    for i in 0..r {
        receivers.push(Arc::new(
            daemon.enrol(&format!("86{:02}{:03}", 14, 100 + i)).await,
        ));
    }
    if let Some(secret) = directory_secret {
        for school in senders.iter().chain(&receivers) {
            approve(daemon, school, secret).await?;
        }
    }
    let receiver_keys: Vec<Vec<SchoolKey>> = receivers
        .iter()
        .map(|r| vec![school_key(&r.identity)])
        .collect();
    let tokens: Vec<String> = senders.iter().map(|s| s.token.clone()).collect();
    let mut channels = Vec::new();
    for _ in 0..s {
        channels.push(daemon.channel().await);
    }

    let parties = Parties {
        daemon,
        senders: &senders,
        receivers: &receivers,
        receiver_keys: &receiver_keys,
        channels: &channels,
        tokens: &tokens,
    };

    // Real sealed 20 KB packs, sealed before the clock starts.
    let jobs = parties.sealed(packs)?;
    let blobs: Vec<Arc<Vec<u8>>> = jobs
        .iter()
        .filter_map(|j| match &j.body {
            Body::Bytes(ct) => Some(ct.clone()),
            Body::Generated { .. } => None,
        })
        .collect();
    let pack_bytes = blobs.first().map_or(0, |b| b.len());
    let transport_jobs = jobs.clone();

    let (cpu0, own0) = (cpu_seconds(daemon.pid()), cpu_seconds(std::process::id()));
    reset_peak(daemon.pid());
    let ingest = upload_all(&channels, &tokens, jobs, clients).await?;
    let cpu = cpu_seconds(daemon.pid()) - cpu0;
    let senders_cpu = cpu_seconds(std::process::id()) - own0;
    println!(
        "{} (packs of {pack_bytes} bytes, {clients} in flight, {s} senders)",
        ingest.line("ingest 20 KB")
    );
    println!(
        "  daemon CPU {cpu:.2} s ({:.0} µs a pack), peak RSS {:.1} MiB; senders (this process) {:.0} µs a pack",
        cpu / packs as f64 * 1e6,
        peak_rss_mib(daemon.pid()),
        senders_cpu / packs as f64 * 1e6
    );
    let ingest_cpu_per_pack = cpu / packs as f64;

    let (cpu0, own0) = (cpu_seconds(daemon.pid()), cpu_seconds(std::process::id()));
    let delivery = parties.deliver(clients).await?;
    println!(
        "{} ({r} receivers: list, download, open, confirm, ack)",
        delivery.line("delivery 20 KB")
    );
    let delivery_cpu = cpu_seconds(daemon.pid()) - cpu0;
    let receivers_cpu = cpu_seconds(std::process::id()) - own0;
    let delivery_cpu_per_pack = delivery_cpu / delivery.packs.max(1) as f64;
    println!(
        "  daemon CPU {delivery_cpu:.2} s ({:.0} µs a pack, {:.2} × ingest's); receivers (this process: TLS, open, sign) {:.0} µs a pack",
        delivery_cpu_per_pack * 1e6,
        delivery_cpu_per_pack / ingest_cpu_per_pack,
        receivers_cpu / delivery.packs.max(1) as f64 * 1e6
    );
    println!(
        "delivery / ingest on shared cores (the receivers' crypto competing with the daemon): {:.0} / {:.0} = {:.2}",
        delivery.rate(),
        ingest.rate(),
        delivery.rate() / ingest.rate()
    );
    println!(
        "BUDGET daemon CPU a delivered pack ≤ 2 × an ingested one: {:.2}, {}",
        delivery_cpu_per_pack / ingest_cpu_per_pack,
        if delivery_cpu_per_pack <= 2.0 * ingest_cpu_per_pack {
            "met"
        } else {
            "MISSED"
        }
    );

    split_cores(&parties, packs, clients).await?;

    // Ceilings, same bytes.
    let (one, batched) = match &daemon.database_url {
        Some(url) => {
            let ceiling = pg_storage_ceiling(url, &blobs, 100).await?;
            print!("storage ceiling (sqlx PostgreSQL, synchronous_commit=on, same bytes): ");
            ceiling
        }
        None => {
            let ceiling = storage_ceiling(&blobs, 100).await?;
            print!("storage ceiling (sqlx SQLite, WAL, synchronous=FULL, same bytes): ");
            ceiling
        }
    };
    println!("one tx a pack {one:.0}/s; 100 a tx {batched:.0}/s");
    let transport_url = transport_server(daemon).await?;
    let mut tchannels = Vec::new();
    for _ in 0..s {
        tchannels.push(tls_channel(&transport_url, &daemon.ca).await);
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
    let mut phases = vec![(
        1usize << 20,
        env_usize("BATON_BENCH_1MB_PACKS", 200),
        clients,
    )];
    phases.extend(std::iter::repeat_n(
        (10 << 20, 64, 64),
        env_usize("BATON_BENCH_10MB_RUNS", 1),
    ));
    let mut downloads = Vec::new();
    for (size, n, k) in phases {
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
        let wanted: Vec<(usize, String)> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (i % r, j.header.pack_id.clone()))
            .collect();
        let drain_jobs = jobs.clone();
        let cpu0 = cpu_seconds(daemon.pid());
        reset_peak(daemon.pid());
        let run = upload_all(&channels, &tokens, jobs, k).await?;
        let peak = peak_rss_mib(daemon.pid());
        println!(
            "{} ({k} in flight)",
            run.line(&format!("ingest {}", human(size as u64)))
        );
        let ingest_cpu = cpu_seconds(daemon.pid()) - cpu0;
        println!("  daemon CPU {ingest_cpu:.2} s, peak RSS {peak:.1} MiB");
        // Downloaded once the memory figures are taken (a download's
        // buffers would raise the daemon's resident memory before them).
        downloads.push((size, wanted, run.mb_s(), run.ms_a_mb(ingest_cpu)));
        // The same bytes, drained over the same TLS, and written to disk.
        let drain = upload_all(&tchannels, &tokens, drain_jobs, k).await?.mb_s();
        let disk = file_ceiling(size, n.min(32)).await?;
        let ceiling = drain.min(disk);
        let share = run.mb_s() / ceiling;
        println!(
            "big-pack ceiling ({}: slower of TLS drain {drain:.0} MB/s and fsync'd sequential write {disk:.0} MB/s): {ceiling:.0} MB/s",
            human(size as u64)
        );
        println!(
            "BUDGET ingest {} ≥ 0.5 × big-pack ceiling: {:.0} / {ceiling:.0} = {share:.2}, {}",
            human(size as u64),
            run.mb_s(),
            if share >= 0.5 { "met" } else { "MISSED" }
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
        reset_peak(daemon.pid());
        let run = upload_all(&channels, &tokens, vec![job], 1).await?;
        println!(
            "single streamed upload of {:>6}: {:.2} s, {:.0} MB/s, daemon peak RSS {:.1} MiB",
            human(size),
            run.wall.as_secs_f64(),
            run.mb_s(),
            peak_rss_mib(daemon.pid())
        );
    }

    // The large packs downloaded by their receivers, as `baton pull` does.
    for (size, wanted, ingest_mb_s, ingest_ms_a_mb) in downloads {
        let cpu0 = cpu_seconds(daemon.pid());
        let run = download_all(&daemon.url, &daemon.ca, &receivers, wanted).await?;
        let cpu = cpu_seconds(daemon.pid()) - cpu0;
        println!(
            "{} ({PULL_CONCURRENCY} at a time a school, {r} schools)",
            run.line(&format!("download {}", human(size as u64)))
        );
        println!(
            "  daemon CPU {cpu:.2} s ({:.2} ms a MB; ingest's {ingest_ms_a_mb:.2} ms a MB); download / ingest {:.2}",
            run.ms_a_mb(cpu),
            run.mb_s() / ingest_mb_s
        );
    }

    // Last, so that nothing it leaves (its writes still being
    // checkpointed) weighs on the figures the budgets are read from.
    results_day(
        &parties,
        packs,
        clients,
        Alone {
            ingest: ingest.rate(),
            delivery: delivery.rate(),
        },
    )
    .await
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The daemon at its default log level, as deployed.
    let _ = common::DAEMON_LOG.set("info");
    let packs = env_usize("BATON_BENCH_PACKS", 2000);
    let clients = env_usize("BATON_BENCH_CLIENTS", 32);
    println!(
        "baton exchange bench: {} cores, {packs} packs of 20 KB, {clients} clients",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let scale_packs = env_usize("BATON_BENCH_SCALE", 1_000_000);
    let sqlite = Daemon::start_sqlite(BIG_PACKS).await;
    backend("SQLite", &sqlite, packs, clients, None).await?;
    if std::env::var("BATON_BENCH_DIRECTORY_KEY").is_ok_and(|v| v == "1") {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("directory.key");
        let public = new_directory_key(&secret).await?;
        let mut args = BIG_PACKS.to_vec();
        args.extend(["--directory-key", public.as_str()]);
        let keyed = Daemon::start_sqlite(&args).await;
        let label = "SQLite with a trust directory key";
        backend(label, &keyed, packs, clients, Some(&secret)).await?;
    }
    crypto(&sqlite.enrol("8618001").await)?;
    class(&sqlite).await?;
    drop(sqlite);
    if scale_packs > 0 {
        scale(
            "SQLite",
            &Daemon::start_sqlite(BIG_PACKS).await,
            scale_packs,
        )
        .await?;
    }
    if common::pgdb::server_url().is_none() {
        println!("\nPostgreSQL skipped: BATON_TEST_DATABASE_URL is not set");
        return Ok(());
    }
    if let Some(pg) = Daemon::start_postgres("exchange bench", BIG_PACKS).await {
        backend("PostgreSQL", &pg, packs, clients, None).await?;
    }
    if scale_packs > 0
        && let Some(pg) = Daemon::start_postgres("exchange bench scale", BIG_PACKS).await
    {
        scale("PostgreSQL", &pg, scale_packs).await?;
    }
    Ok(())
}
