//! Crash consistency (threat model, point 7). A bulk send of real sealed
//! packs from several schools at once, with the daemon killed by SIGKILL
//! at seeded random moments and restarted on the same data directory; the
//! clients re-send whatever was not confirmed (same id, same bytes). After
//! the last round: every pack is stored exactly once and byte-identical,
//! every pack confirmed before a kill survived it, every pack downloads,
//! `batond admin audit verify` passes, no chunk is orphaned or left
//! staged, and no pupil data is at rest on the server. Then the real
//! `baton` CLI is killed mid-send and mid-pull: a pull never leaves a
//! half-written pack folder, and a re-run completes the rest.
//!
//! `BATON_LONG=1` runs more packs and rounds; `BATON_SEED=N` picks another
//! (reproducible) sequence of kill moments.

use crate::common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton::api::v1;
use common::Daemon;
use common::cli::{Home, enrol};
use common::reliability::{
    assert_daemon_holds_no_plaintext, distinctive_record, needles, plaintext_hits, seal_record,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::Channel;

/// A small deterministic generator (xorshift), so kill moments reproduce.
struct Rng(u64);

impl Rng {
    fn from_env() -> Self {
        let seed = std::env::var("BATON_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_ba70_u64);
        println!("seed {seed} (BATON_SEED={seed} reproduces this run)");
        Self(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn long() -> bool {
    std::env::var("BATON_LONG").is_ok_and(|v| v == "1")
}

/// One pack of the bulk send.
struct Pack {
    sender: usize,
    header: v1::PackHeader,
    ciphertext: Vec<u8>,
}

/// Uploads `queue` from each sender with `in_flight` streams per sender on
/// `channel`; reports each confirmation to `progress`. Returns (confirmed
/// pack indices, failed attempts).
async fn send_round(
    schools: &[Arc<common::School>],
    packs: &Arc<Vec<Pack>>,
    queues: Vec<VecDeque<usize>>,
    channel: &Channel,
    in_flight: usize,
    progress: &watch::Sender<usize>,
) -> (Vec<usize>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for (s, queue) in queues.into_iter().enumerate() {
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..in_flight {
            let school = schools[s].clone();
            let packs = packs.clone();
            let queue = queue.clone();
            let channel = channel.clone();
            let progress = progress.clone();
            tasks.spawn(async move {
                let mut confirmed = Vec::new();
                let mut failed = 0;
                loop {
                    let Some(i) = queue.lock().unwrap().pop_front() else {
                        break;
                    };
                    let p = &packs[i];
                    match school
                        .via(&channel)
                        .upload(&p.header, &p.ciphertext, 64 * 1024)
                        .await
                    {
                        Ok(resp) => {
                            assert_eq!(resp.pack_id, p.header.pack_id);
                            confirmed.push(i);
                            progress.send_modify(|n| *n += 1);
                        }
                        Err(status) => {
                            // The daemon died under us: what it did not
                            // confirm, this pack included, is re-sent next
                            // round.
                            assert!(
                                !matches!(
                                    status.code(),
                                    tonic::Code::AlreadyExists
                                        | tonic::Code::InvalidArgument
                                        | tonic::Code::PermissionDenied
                                ),
                                "a re-send was refused: {status:?}"
                            );
                            failed += 1;
                            // Give up the round (the rest goes next round).
                            break;
                        }
                    }
                }
                (confirmed, failed)
            });
        }
    }
    let mut confirmed = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (c, f) = done.unwrap();
        confirmed.extend(c);
        failed += f;
    }
    (confirmed, failed)
}

async fn stored_pack_ids(db: &Path) -> HashSet<String> {
    let pool = common::open_db(db).await;
    let ids: Vec<(String,)> = sqlx::query_as("SELECT pack_id FROM packs")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    ids.into_iter().map(|(id,)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_send_survives_kill_9_at_random_moments() {
    let (pack_count, rounds) = if long() { (10_000, 50) } else { (2_000, 10) };
    let mut rng = Rng::from_env();
    let started = Instant::now();
    let mut daemon = Daemon::start(&[]).await;
    let mut senders = Vec::new();
    for n in 1..=4 {
        senders.push(Arc::new(daemon.enrol(&format!("861200{n}")).await));
    }
    let recipients = [daemon.enrol("8614001").await, daemon.enrol("8614002").await];

    // Real sealed packs, small, with one in a hundred carrying a 1.5 MB
    // attachment so that uploads also stage chunks before their commit.
    let mut keys = HashMap::new();
    for (s, school) in senders.iter().enumerate() {
        for (r, to) in recipients.iter().enumerate() {
            keys.insert((s, r), school.keys_of(&to.laestab).await);
        }
    }
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
    let mut packs = Vec::with_capacity(pack_count);
    let mut all_needles = Vec::new();
    for i in 0..pack_count {
        let (s, r) = (i % senders.len(), (i / senders.len()) % recipients.len());
        let record = distinctive_record("Crash", 4242, i as u32);
        all_needles.extend(needles(&record));
        let extra = i.is_multiple_of(100).then_some(big.as_slice());
        let (header, ciphertext) =
            seal_record(&senders[s], &recipients[r], &keys[&(s, r)], &record, extra);
        packs.push(Pack {
            sender: s,
            header,
            ciphertext,
        });
    }
    let packs = Arc::new(packs);
    let sealed_in = started.elapsed();

    let mut confirmed: HashSet<usize> = HashSet::new();
    let (mut attempts, mut failed_attempts, mut kills) = (0usize, 0usize, 0usize);
    let mut restart_total = Duration::ZERO;
    for round in 0..=rounds {
        let last = round == rounds;
        let mut queues = vec![VecDeque::new(); senders.len()];
        for (i, p) in packs.iter().enumerate() {
            if !confirmed.contains(&i) {
                queues[p.sender].push_back(i);
            }
        }
        let remaining = pack_count - confirmed.len();
        attempts += remaining;
        let channel = daemon.channel().await;
        let (progress, mut seen) = watch::channel(0usize);
        // Kill after a random share of what is left for this round, so every
        // round makes progress and some rounds die early, some late.
        let share = (remaining / (rounds - round).max(1)).max(2) as u64;
        let kill_after = rng
            .range(1, share * 2 - 1)
            .min((remaining as u64).saturating_sub(1)) as usize;
        let jitter = Duration::from_micros(rng.range(0, 3000));
        let sending = send_round(&senders, &packs, queues, &channel, 4, &progress);
        tokio::pin!(sending);
        let (got, failed) = if last {
            sending.await
        } else {
            // Usually the kill lands mid-round; when little is left the
            // round may finish first, and the kill hits an idle daemon.
            let finished = tokio::select! {
                biased;
                _ = seen.wait_for(|n| *n >= kill_after) => None,
                result = &mut sending => Some(result),
            };
            tokio::time::sleep(jitter).await;
            daemon.kill9().await;
            kills += 1;
            match finished {
                Some(result) => result,
                None => sending.await,
            }
        };
        failed_attempts += failed;
        confirmed.extend(got);
        if last {
            assert_eq!(failed, 0, "the last round ran without kills");
            break;
        }
        let t = Instant::now();
        daemon.restart(&[]).await;
        restart_total += t.elapsed();
        // Nothing confirmed to a client was lost.
        let stored = stored_pack_ids(&daemon.db_path()).await;
        for i in &confirmed {
            assert!(
                stored.contains(&packs[*i].header.pack_id),
                "round {round}: a confirmed pack was lost by the crash"
            );
        }
    }
    assert_eq!(confirmed.len(), pack_count);

    // A full re-send is idempotent: every pack is already stored.
    let channel = daemon.channel().await;
    for p in packs.iter().step_by(7) {
        let resp = senders[p.sender]
            .via(&channel)
            .upload(&p.header, &p.ciphertext, 64 * 1024)
            .await
            .unwrap();
        assert!(resp.already_stored);
    }
    // The same id with other bytes is refused.
    let p = &packs[1];
    let mut other = p.ciphertext.clone();
    other[200] ^= 1;
    let conflict = senders[p.sender].header_with(
        p.header.pack_id.parse().unwrap(),
        &recipients[1].laestab,
        &keys[&(p.sender, 1)],
        &other,
    );
    let err = senders[p.sender]
        .upload(&v1::PackHeader::from(&conflict), &other, 64 * 1024)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    // Exactly once, byte-identical, nothing orphaned or left staged.
    let pool = common::open_db(&daemon.db_path()).await;
    let rows: Vec<(String, Vec<u8>, i64)> =
        sqlx::query_as("SELECT pack_id, ciphertext_sha256, chunks FROM packs")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), pack_count, "every pack exactly once");
    let expected: HashMap<&str, Vec<u8>> = packs
        .iter()
        .map(|p| {
            (
                p.header.pack_id.as_str(),
                Sha256::digest(&p.ciphertext).to_vec(),
            )
        })
        .collect();
    for (id, sha, _) in &rows {
        assert_eq!(expected.get(id.as_str()), Some(sha), "pack {id}");
    }
    let (orphans,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pack_chunks WHERE upload_id NOT IN (SELECT upload_id FROM packs)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (staged,): (i64,) = sqlx::query_as("SELECT count(*) FROM pack_chunks WHERE staged = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (chunk_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM pack_chunks")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!((orphans, staged), (0, 0), "orphaned / staged chunks");
    // Packs of more than one chunk are ciphertext files beside the
    // database: one each, none staged, none orphaned.
    let (staged_files, held_files) = crate::common::ciphertext_files(&daemon.data);
    let in_files: Vec<i64> = rows.iter().map(|r| r.2).filter(|c| *c > 1).collect();
    assert_eq!((staged_files, held_files), (0, in_files.len()), "files");
    assert_eq!(
        chunk_rows,
        rows.iter().map(|r| r.2).sum::<i64>() - in_files.iter().sum::<i64>()
    );

    let checked_at = started.elapsed();
    // Every pack downloads, byte-identical.
    let mut tasks = tokio::task::JoinSet::new();
    let recipients = Arc::new(recipients);
    for worker in 0..4usize {
        let packs = packs.clone();
        let recipients = recipients.clone();
        tasks.spawn(async move {
            for (i, p) in packs.iter().enumerate().skip(worker).step_by(4) {
                let r = (i / 4) % recipients.len();
                let (header, data) = recipients[r].download(&p.header.pack_id).await.unwrap();
                assert_eq!(header, p.header);
                assert!(data == p.ciphertext, "pack {i} differs after the crashes");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let downloaded_at = started.elapsed();
    let out = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(
        out.status.success(),
        "audit verify after {kills} kills: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scanned = assert_daemon_holds_no_plaintext(&daemon, &all_needles);
    let cleaned = std::fs::read_to_string(&daemon.log)
        .unwrap()
        .matches("removed chunks of unfinished uploads")
        .count();
    println!(
        "crash: {pack_count} packs from {} schools, {kills} kill -9 rounds, {attempts} uploads queued over the rounds, {failed_attempts} cut off by a kill (others queued behind them), \
         {cleaned} restarts cleaned staged chunks, restarts {:.1} s in all; 0 lost, 0 duplicated, 0 orphaned chunks; \
         audit verify: {}; plaintext scan: {} files, {} bytes, {} needles, 0 hits; \
         sealed by {:.1} s, rounds and checks done by {:.1} s, downloads by {:.1} s, total {:.1} s",
        senders.len(),
        restart_total.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim(),
        scanned.files,
        scanned.bytes,
        all_needles.len(),
        sealed_in.as_secs_f64(),
        checked_at.as_secs_f64(),
        downloaded_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Writes a pack folder for the CLI; returns it.
fn pack_folder(root: &Path, serial: u32) -> std::path::PathBuf {
    let dir = root.join(format!("pack-{serial}"));
    std::fs::create_dir_all(&dir).unwrap();
    let record = distinctive_record("Cli", 4343, serial);
    std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
    let report: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(serial + 3) % 251) as u8)
        .collect();
    std::fs::write(dir.join("report.pdf"), report).unwrap();
    dir
}

/// Complete pack folders under `from_dir`, checked against their sources;
/// panics on a half-written one.
fn complete_folders(from_dir: &Path, sources: &HashMap<String, std::path::PathBuf>) -> usize {
    let Ok(entries) = std::fs::read_dir(from_dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let dir = entry.unwrap().path();
        let upn = dir.file_name().unwrap().to_string_lossy().into_owned();
        let source = &sources[&upn];
        let pack: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("pack.json")).unwrap()).unwrap();
        assert_eq!(pack["verified"], true);
        for name in ["record.json", "report.pdf"] {
            assert!(
                std::fs::read(dir.join(name)).unwrap() == std::fs::read(source.join(name)).unwrap(),
                "{} is half-written",
                dir.display()
            );
        }
        n += 1;
    }
    n
}

/// Spawns `baton ARGS` in `home` and kills it (SIGKILL) once `ready`
/// returns true, polling the file system (there is no event to await).
/// Returns false if the command finished first.
async fn kill_when(home: &Home, args: &[&str], ready: impl Fn() -> bool) -> bool {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .env("BATON_HOME", &home.dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    loop {
        if ready() {
            child.kill().await.unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn sent_in_outbox(home: &Home) -> usize {
    std::fs::read_dir(home.dir.join("outbox"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.contains("\"state\": \"sent\""))
                })
                .count()
        })
        .unwrap_or(0)
}

/// See also `client_journey::a_send_killed_midway_and_run_again_delivers_every_pack_exactly_once`
/// (a fixed kill point with 1.5 MB packs); here the kill points are random.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_killed_mid_send_and_mid_pull_leaves_nothing_half_done() {
    const PACKS: u32 = 40;
    let mut rng = Rng::from_env();
    let daemon = Daemon::start(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let s = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let mut sources = HashMap::new();
    let mut args: Vec<String> = vec!["send".into(), "--to".into(), "8614001".into()];
    let mut all_needles = Vec::new();
    for serial in 0..PACKS {
        let dir = pack_folder(root.path(), serial);
        let record = distinctive_record("Cli", 4343, serial);
        all_needles.extend(needles(&record));
        sources.insert(record.upn.clone(), dir.clone());
        args.push(dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Send, killed twice at random points, then run to the end.
    let mut send_kills = Vec::new();
    for _ in 0..2 {
        let target = sent_in_outbox(&a) + rng.range(1, 10) as usize;
        let killed = kill_when(&a, &args, || sent_in_outbox(&a) >= target).await;
        send_kills.push((target, killed));
    }
    let out = a.ok(&args).await;
    assert!(out.contains("failed 0"), "{out}");
    let inbox = s.json(&["inbox", "--json"]).await;
    let ids: HashSet<&str> = inbox.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!((inbox.len(), ids.len()), (PACKS as usize, PACKS as usize));

    // Pull, killed three times at random points: only complete folders.
    let out_dir = root.path().join("pulled");
    let from_dir = out_dir.join("8612001");
    let out_arg = out_dir.display().to_string();
    let pull = ["pull", "--all", "--out", out_arg.as_str()];
    let mut pull_kills = Vec::new();
    for _ in 0..3 {
        let before = complete_folders(&from_dir, &sources);
        let target = before + rng.range(1, 8) as usize;
        let killed = kill_when(&s, &pull, || {
            std::fs::read_dir(&from_dir).is_ok_and(|d| d.count() >= target)
        })
        .await;
        let after = complete_folders(&from_dir, &sources);
        assert!(after >= before);
        pull_kills.push((after, killed));
    }
    s.ok(&pull).await;
    assert_eq!(complete_folders(&from_dir, &sources), PACKS as usize);
    let leftovers: Vec<(bool, u64)> = std::fs::read_dir(out_dir.join(".baton-staging"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    (
                        e.path().is_dir(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "a completed pull leaves nothing staged: {leftovers:?}"
    );
    // The scanner works: the pulled folders hold the pupils' data.
    let (_, hits) = plaintext_hits(&[&from_dir], &all_needles);
    assert!(hits.len() >= PACKS as usize);
    let scanned = assert_daemon_holds_no_plaintext(&daemon, &all_needles);
    println!(
        "cli: {PACKS} packs; send killed at (target confirmed, killed) {send_kills:?}; \
         pull killed at (complete folders, killed) {pull_kills:?}; staging leftovers after the re-run (is_dir, len): {:?}; \
         plaintext scan: {} files, {} bytes, 0 hits",
        leftovers, scanned.files, scanned.bytes
    );
}
