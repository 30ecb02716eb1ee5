//! Helpers for the reliability suite (tests/reliability_*.rs): kill the
//! daemon with SIGKILL and start it again on the same data directory and
//! address, read its peak memory, seal real packs around distinctive pupil
//! data, and scan the daemon's files for any of that data in plaintext.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use baton::api::v1;
use baton::crypto::{Draft, seal};
use baton::keys::SchoolKey;
use baton::pack::{Kind, Manifest, PackId};
use baton::record::TransitionRecord;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Daemon, School, batond};

impl Daemon {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the daemon is running")
    }

    /// Kills the daemon with SIGKILL (no shutdown, no flush) and reaps it.
    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Starts `batond serve` again on the same data directory, database and
    /// address (so existing channels reconnect), appending to the same log.
    pub async fn restart(&mut self, extra: &[&str]) {
        let listen = self.url.trim_start_matches("https://").to_string();
        for attempt in 0.. {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.log)
                .unwrap();
            let mut cmd = batond();
            if let Some(url) = &self.database_url {
                cmd.args(["--database-url", url]);
            }
            let mut child = cmd
                .arg("serve")
                .arg("--data-dir")
                .arg(&self.data)
                .args(["--listen", &listen])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            match lines.next_line().await.unwrap() {
                Some(first) if first.starts_with("listening on ") => {
                    let _ca = lines.next_line().await.unwrap();
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    self.child = child;
                    return;
                }
                _ => {
                    // The port may still be held for a moment; try again.
                    let _ = child.wait().await;
                    assert!(
                        attempt < 50,
                        "the daemon did not restart: {}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Peak resident memory of the daemon (`VmHWM`), KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident memory of the daemon (`VmRSS`), KiB.
    pub fn vm_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// True when `grpc.health.v1.Health/Check` answers SERVING.
    pub async fn healthy(&self) -> bool {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut client = HealthClient::new(self.channel().await);
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
    }

    /// The folder holding the data directory and the log.
    pub fn root(&self) -> PathBuf {
        self.data.parent().unwrap().to_path_buf()
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A valid UPN built from a 3-digit LA code, a 4-digit tag and a serial.
pub fn upn(la: u32, tag: u32, serial: u32) -> String {
    let body = format!(
        "{:03}{:04}{:02}{:03}",
        la % 1000,
        tag % 10_000,
        (serial / 1000) % 100,
        serial % 1000
    );
    let check = baton::upn::check_letter(body.as_bytes());
    format!("{}{body}", char::from(check))
}

/// A pupil record whose name, UPN and note are distinctive strings that
/// appear nowhere else (so a plaintext scan can look for them).
pub fn distinctive_record(tag: &str, tag_no: u32, serial: u32) -> TransitionRecord {
    TransitionRecord {
        upn: upn(861, tag_no, serial),
        surname: format!("Quillfeather{tag}{serial:05}"),
        forename: format!("Zephyrine{tag}{serial:05}"),
        dob: "2014-09-12".into(),
        sex: "F".into(),
        notes: format!("Confidential note {tag}/{serial:05}: anxious about the move"),
        ..Default::default()
    }
}

/// The strings of `record` that must never appear at rest on the server.
pub fn needles(record: &TransitionRecord) -> Vec<String> {
    vec![
        record.upn.clone(),
        record.surname.clone(),
        record.forename.clone(),
        record.notes.clone(),
    ]
}

/// Seals `record` (and optional attachment `extra`) from `from` to `to`
/// with `keys` (the destination's directory keys): the wire header and the
/// age ciphertext.
pub fn seal_record(
    from: &School,
    to: &School,
    keys: &[SchoolKey],
    record: &TransitionRecord,
    extra: Option<&[u8]>,
) -> (v1::PackHeader, Vec<u8>) {
    let draft = Draft {
        pack_id: PackId::new(),
        from: from.laestab,
        to: to.laestab,
        kind: Kind::Transfer,
        created_at_ms: 1,
        left_on: None,
        supersedes: None,
    };
    let attachments = match extra {
        Some(mut bytes) => {
            vec![baton::pack::AttachmentMeta::describe("report.pdf", &mut bytes).unwrap()]
        }
        None => vec![],
    };
    let mut manifest = Manifest {
        record: record.clone(),
        ctf_pupil_xml: None,
        attachments,
    };
    let (signed, sealed) = seal(
        &draft,
        &mut manifest,
        |_| Ok(extra.unwrap_or_default()),
        keys,
        &from.identity,
        Vec::new(),
    )
    .unwrap();
    (v1::PackHeader::from(&signed), sealed)
}

/// Files and bytes a plaintext scan read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scanned {
    /// Files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
}

/// Reads every file under `roots` (recursively; a root may be a file) and
/// returns where any of `needles` occurs: (file, needle index).
pub fn plaintext_hits(roots: &[&Path], needles: &[String]) -> (Scanned, Vec<(PathBuf, usize)>) {
    let needles: Vec<Vec<u8>> = needles.iter().map(|n| n.as_bytes().to_vec()).collect();
    byte_hits(roots, &needles)
}

/// As [`plaintext_hits`] for byte strings (e.g. pieces of ciphertext).
pub fn byte_hits(roots: &[&Path], needles: &[Vec<u8>]) -> (Scanned, Vec<(PathBuf, usize)>) {
    let finder = Finder::new(needles);
    let mut scanned = Scanned::default();
    let mut hits = Vec::new();
    let mut stack: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if meta.is_file() {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            scanned.files += 1;
            scanned.bytes += bytes.len() as u64;
            if let Some(i) = finder.find(&bytes) {
                hits.push((path, i));
            }
        }
    }
    (scanned, hits)
}

/// As [`plaintext_hits`], panicking on a hit. The panic names the file and
/// the needle's index, never the needle (it is pupil data).
pub fn assert_no_plaintext(roots: &[&Path], needles: &[String]) -> Scanned {
    let (scanned, hits) = plaintext_hits(roots, needles);
    if let Some((path, i)) = hits.first() {
        panic!(
            "pupil data (needle #{i}) found in plaintext in {} ({} files with hits)",
            path.display(),
            hits.len()
        );
    }
    scanned
}

/// The daemon's files at rest: its data directory (database, WAL, TLS),
/// its log, anything else it wrote in its folder, and, on PostgreSQL, a
/// `pg_dump` of its database.
pub fn assert_daemon_holds_no_plaintext(daemon: &Daemon, needles: &[String]) -> Scanned {
    if let Some(url) = &daemon.database_url {
        let dump = std::process::Command::new("pg_dump")
            .arg(url)
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(!dump.stdout.is_empty());
        std::fs::write(daemon.root().join("pg_dump.sql"), &dump.stdout).unwrap();
        // pg_dump writes bytea as hex: look for the hex form of each needle too.
        let mut both = needles.to_vec();
        both.extend(needles.iter().map(hex::encode));
        return assert_no_plaintext(&[&daemon.root()], &both);
    }
    assert_no_plaintext(&[&daemon.root()], needles)
}

/// Many-needle search: a 4-byte prefix index, then exact compares. Random
/// ciphertext almost never matches a prefix, so this is one hash lookup a
/// byte even for thousands of needles.
struct Finder {
    /// Which first two bytes start some needle: a cheap filter before the map.
    first_two: Vec<bool>,
    by_prefix: std::collections::HashMap<[u8; 4], Vec<usize>>,
    needles: Vec<Vec<u8>>,
}

impl Finder {
    fn new(needles: &[Vec<u8>]) -> Self {
        let needles: Vec<Vec<u8>> = needles.to_vec();
        let mut by_prefix: std::collections::HashMap<[u8; 4], Vec<usize>> = Default::default();
        let mut first_two = vec![false; 1 << 16];
        for (i, n) in needles.iter().enumerate() {
            assert!(n.len() >= 4, "needle #{i} is too short to search for");
            first_two[usize::from(n[0]) << 8 | usize::from(n[1])] = true;
            by_prefix
                .entry([n[0], n[1], n[2], n[3]])
                .or_default()
                .push(i);
        }
        Self {
            first_two,
            by_prefix,
            needles,
        }
    }

    /// The index of a needle found in `hay`.
    fn find(&self, hay: &[u8]) -> Option<usize> {
        if hay.len() < 4 {
            return None;
        }
        for (start, pair) in hay.windows(2).enumerate().take(hay.len() - 3) {
            if !self.first_two[usize::from(pair[0]) << 8 | usize::from(pair[1])] {
                continue;
            }
            let key = [hay[start], hay[start + 1], hay[start + 2], hay[start + 3]];
            if let Some(group) = self.by_prefix.get(&key) {
                for &i in group {
                    if hay[start..].starts_with(&self.needles[i]) {
                        return Some(i);
                    }
                }
            }
        }
        None
    }
}
