//! End-to-end with the real binaries: the real `batond` on TLS and SQLite,
//! and the real `baton` CLI in one home per school. Two primaries send a
//! class of 30 to a secondary, which pulls, checks and acknowledges them;
//! the senders see verified receipts; and the refusals a school relies on.

use crate::common;

use std::path::{Path, PathBuf};

use baton::record::{Attendance, TransitionRecord};
use common::Daemon;
use common::cli::{Home, code, enrol, init};
use common::reliability::assert_daemon_holds_no_plaintext;
use sha2::{Digest, Sha256};

/// A valid UPN with the given serial.
fn upn(serial: u32) -> String {
    let body = format!("86120012{:01}{:03}", serial / 1000 % 10, serial % 1000);
    let body = format!("{body:0>12}");
    let check = baton::upn::check_letter(body.as_bytes());
    format!("{}{body}", char::from(check))
}

fn record(serial: u32) -> TransitionRecord {
    TransitionRecord {
        upn: upn(serial),
        surname: format!("Ní Bhriain-Zyx{serial}"),
        forename: format!("Aoife{serial}"),
        dob: "2015-03-04".into(),
        sex: if serial.is_multiple_of(2) {
            "F".into()
        } else {
            "M".into()
        },
        sen_provision: "K".into(),
        sen_needs: vec!["SLCN".into()],
        attendance: Some(Attendance {
            year: 2025,
            possible: 380,
            attended: 370,
            authorised: 6,
            unauthorised: 4,
        }),
        notes: format!("Secret pastoral note {serial}, with a comma\nand a second line"),
        ..Default::default()
    }
}

/// Writes a pack folder; returns it and its attachments (name, bytes).
fn pack_folder(root: &Path, serial: u32, attachments: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = root.join(format!("pack-{serial}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), record(serial).to_json()).unwrap();
    for (name, bytes) in attachments {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    dir
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "pack.json")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn two_primaries_send_a_class_and_the_secondary_pulls_and_acknowledges(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let b = enrol(&daemon, root.path(), "8612002", "primary", &["staff"]).await;
    let s = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;

    let started = std::time::Instant::now();
    let mut sources = Vec::new();
    for serial in 0..30u32 {
        let mut attachments = vec![(
            "profile.pdf",
            format!("%PDF one page profile {serial}").into_bytes(),
        )];
        if serial == 3 {
            attachments.push((
                "ehcp.pdf",
                (0..5_500_000u32).map(|i| (i % 251) as u8).collect(),
            ));
        }
        if serial == 4 {
            attachments.push(("empty-note.txt", Vec::new()));
        }
        sources.push(pack_folder(root.path(), serial, &attachments));
    }
    let (first, second) = sources.split_at(15);
    for (home, packs) in [(&a, first), (&b, second)] {
        let mut args: Vec<String> = vec!["send".into(), "--to".into(), "8614001".into()];
        args.extend(packs.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = home.ok(&args).await;
        assert!(out.contains("sent 15, already sent 0, failed 0"), "{out}");
    }

    let inbox = s.json(&["inbox", "--json"]).await;
    assert_eq!(inbox.len(), 30);
    assert!(
        inbox
            .iter()
            .all(|p| p["to"] == "8614001" && p["kind"] == "transfer" && p["state"] == "pending")
    );

    let out_dir = root.path().join("pulled");
    s.ok(&["pull", "--all", "--out", out_dir.to_str().unwrap()])
        .await;
    for (serial, source) in sources.iter().enumerate() {
        let from = if serial < 15 { "8612001" } else { "8612002" };
        let pulled = out_dir.join(from).join(upn(serial as u32));
        assert_eq!(
            files_of(&pulled),
            files_of(source),
            "pack {serial} differs after the round trip"
        );
        let pack: serde_json::Value =
            serde_json::from_slice(&std::fs::read(pulled.join("pack.json")).unwrap()).unwrap();
        assert_eq!(pack["verified"], true);
        assert_eq!(pack["from"], from);
        // pack.json lists every attachment with the hash it was checked against.
        let listed: Vec<(String, u64, String)> = pack["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_string(),
                    a["size"].as_u64().unwrap(),
                    a["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, u64, String)> = files_of(source)
            .into_iter()
            .filter(|(name, _)| name != "record.json")
            .map(|(name, bytes)| {
                let sha = hex::encode(Sha256::digest(&bytes));
                (name, bytes.len() as u64, sha)
            })
            .collect();
        assert!(!expected.is_empty(), "pack {serial} has no attachment");
        assert_eq!(listed, expected, "pack {serial}");
    }
    assert!(
        !out_dir.join(".baton-staging").exists(),
        "nothing is left staged"
    );

    s.ok(&["ack", "--all-pulled"]).await;
    let elapsed = started.elapsed();
    for home in [&a, &b] {
        let sent = home.json(&["sent", "--json"]).await;
        assert_eq!(sent.len(), 15);
        for p in &sent {
            assert_eq!(p["state"], "acknowledged", "{p}");
            assert_eq!(p["receipt_verified"], true, "{p}");
            assert!(
                p["upn"]
                    .as_str()
                    .unwrap()
                    .starts_with(|c: char| c.is_ascii_uppercase())
            );
        }
    }
    let receipts = root.path().join("receipts");
    a.ok(&["sent", "--receipts", receipts.to_str().unwrap()])
        .await;
    let csv = std::fs::read_to_string(receipts.join("receipts.csv")).unwrap();
    assert_eq!(csv.lines().count(), 16, "{csv}");
    assert_eq!(std::fs::read_dir(&receipts).unwrap().count(), 16);
    println!(
        "30-pupil class, two senders, pull and ack: {:.1} s (debug build)",
        elapsed.as_secs_f64()
    );

    // Nothing about any pupil reached the server's disk, database or log.
    let needles: Vec<String> = (0..30u32)
        .flat_map(|serial| {
            let r = record(serial);
            [r.upn, r.surname, r.forename, r.notes]
        })
        .collect();
    let scanned = assert_daemon_holds_no_plaintext(&daemon, &needles);
    assert!(
        scanned.bytes > 5_000_000,
        "the ciphertext should be in what was scanned"
    );
}

async fn one_invalid_upn_sends_nothing_and_names_file_and_field(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let s = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let mut args: Vec<String> = vec!["send".into(), "--to".into(), "8614001".into()];
    let mut bad = PathBuf::new();
    for serial in 0..30u32 {
        let dir = pack_folder(root.path(), serial, &[]);
        if serial == 17 {
            let mut r = record(serial);
            r.upn
                .replace_range(0..1, if r.upn.starts_with('A') { "B" } else { "A" });
            std::fs::write(dir.join("record.json"), r.to_json()).unwrap();
            bad = dir.join("record.json");
        }
        args.push(dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = a.baton(&args).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: upn: check letter should be", bad.display())),
        "{err}"
    );
    assert!(err.contains("nothing was sent"), "{err}");
    assert!(s.json(&["inbox", "--json"]).await.is_empty());
}

async fn a_school_cannot_pull_another_schools_pack(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let b = enrol(&daemon, root.path(), "8612002", "primary", &["staff"]).await;
    let s = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let pack = pack_folder(root.path(), 1, &[("note.txt", b"hello".to_vec())]);
    a.ok(&["send", "--to", "8614001", pack.to_str().unwrap()])
        .await;
    let id = s.json(&["inbox", "--json"]).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out_dir = root.path().join("stolen");
    let out = b
        .baton(&["pull", &id, "--out", out_dir.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pack"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out_dir.join("8612001").exists());
    let out = b.baton(&["ack", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(b.json(&["inbox", "--json"]).await.is_empty());
    assert_eq!(s.json(&["inbox", "--json"]).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let home = Home {
        dir: tempfile::tempdir().unwrap().path().to_path_buf(),
    };
    let out = home.baton(&["send"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = home.baton(&["inbox"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("baton init"));
}

async fn a_send_killed_midway_and_run_again_delivers_every_pack_exactly_once(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let s = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let mut args: Vec<String> = vec!["send".into(), "--to".into(), "8614001".into()];
    for serial in 0..30u32 {
        let big: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i.wrapping_mul(serial + 7) % 253) as u8)
            .collect();
        args.push(
            pack_folder(root.path(), serial, &[("report.pdf", big)])
                .display()
                .to_string(),
        );
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .env("BATON_HOME", &a.dir)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some packs are confirmed, then kill the sender without warning.
    let outbox = a.dir.join("outbox");
    loop {
        let sent = std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_to_string(e.path())
                            .is_ok_and(|t| t.contains("\"state\": \"sent\""))
                    })
                    .count()
            })
            .unwrap_or(0);
        if sent >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the send finished before it could be interrupted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().await.unwrap();
    let before = s.json(&["inbox", "--json"]).await.len();
    assert!(before < 30, "the send was not interrupted");

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = a.ok(&args).await;
    assert!(out.contains("failed 0"), "{out}");
    let inbox = s.json(&["inbox", "--json"]).await;
    let mut ids: Vec<&str> = inbox.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (inbox.len(), ids.len()),
        (30, 30),
        "every pack exactly once"
    );
    let out_dir = root.path().join("pulled");
    s.ok(&["pull", "--all", "--out", out_dir.to_str().unwrap()])
        .await;
    assert_eq!(
        std::fs::read_dir(out_dir.join("8612001")).unwrap().count(),
        30
    );
    // A third run sends nothing at all.
    let out = a.ok(&args).await;
    assert!(out.contains("sent 0, already sent 30, failed 0"), "{out}");
}

async fn a_safeguarding_pack_opens_only_with_a_dsl_key(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["dsl"]).await;
    let dsl = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let staff = init(
        &daemon,
        root.path(),
        "8614001",
        &code(&daemon, "8614001").await,
        &["staff", "senco"],
    )
    .await;
    let pack = pack_folder(
        root.path(),
        9,
        &[("cp-chronology.pdf", b"child protection file".to_vec())],
    );
    a.ok(&[
        "send",
        "--to",
        "8614001",
        "--kind",
        "safeguarding",
        pack.to_str().unwrap(),
    ])
    .await;
    // The staff device does not even see it (issue 15): not listed, not
    // downloadable, not pulled.
    assert!(staff.json(&["inbox", "--json"]).await.is_empty());
    let inbox = dsl.json(&["inbox", "--json"]).await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["kind"], "safeguarding");
    let staff_out = root.path().join("staff-out");
    let out = staff
        .ok(&["pull", "--all", "--out", staff_out.to_str().unwrap()])
        .await;
    assert!(out.contains("nothing to pull"), "{out}");
    let id = inbox[0]["id"].as_str().unwrap();
    let out = staff
        .baton(&["pull", id, "--out", staff_out.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pack"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!staff_out.join("8612001").exists());

    let dsl_out = root.path().join("dsl-out");
    dsl.ok(&["pull", "--all", "--out", dsl_out.to_str().unwrap()])
        .await;
    let folder = dsl_out.join("8612001/safeguarding").join(upn(9));
    assert_eq!(
        std::fs::read(folder.join("cp-chronology.pdf")).unwrap(),
        b"child protection file"
    );
}

async fn a_key_added_on_the_server_is_caught_by_the_pinned_client(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let a = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _s = enrol(&daemon, root.path(), "8614001", "secondary", &["dsl"]).await;
    let first = pack_folder(root.path(), 1, &[]);
    let out = a
        .baton(&["send", "--to", "8614001", first.to_str().unwrap()])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("pinned the keys of 8614001"));

    // A key appears for the secondary (here a real enrolment; an attacker
    // with the server's database could insert one the same way).
    let _extra = init(
        &daemon,
        root.path(),
        "8614001",
        &code(&daemon, "8614001").await,
        &["staff"],
    )
    .await;
    let second = pack_folder(root.path(), 2, &[]);
    let out = a
        .baton(&["send", "--to", "8614001", second.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("THE KEYS OF SCHOOL 8614001 HAVE CHANGED"),
        "{err}"
    );
    assert!(err.contains("nothing was sealed to them"), "{err}");
    let show = a.ok(&["schools", "show", "8614001"]).await;
    assert!(show.contains("CHANGED since pinned"), "{show}");

    a.ok(&["schools", "trust", "8614001"]).await;
    let out = a
        .ok(&["send", "--to", "8614001", second.to_str().unwrap()])
        .await;
    assert!(out.contains("sent 1"), "{out}");
}

on_both_backends!(two_primaries_send_a_class_and_the_secondary_pulls_and_acknowledges);
on_both_backends!(one_invalid_upn_sends_nothing_and_names_file_and_field);
on_both_backends!(a_school_cannot_pull_another_schools_pack);
on_both_backends!(a_send_killed_midway_and_run_again_delivers_every_pack_exactly_once);
on_both_backends!(a_safeguarding_pack_opens_only_with_a_dsl_key);
on_both_backends!(a_key_added_on_the_server_is_caught_by_the_pinned_client);
