//! Regression tests for what broke when the product was tried as a new user
//! would (issue 13): repeat packs for one pupil, the same pupils sent twice,
//! packs stranded by a key change, one bad destination in a class, honest
//! failure messages, and plain words. The real `batond` and `baton`.

use crate::common;

use std::path::{Path, PathBuf};

use baton::record::TransitionRecord;
use common::Daemon;
use common::cli::{Home, code, enrol, init};
use common::reliability::upn;

pub(crate) fn record(serial: u32, note: &str) -> TransitionRecord {
    TransitionRecord {
        upn: upn(861, 2001, serial),
        surname: format!("Pilot{serial}"),
        forename: "Robin".into(),
        dob: "2015-03-04".into(),
        sex: "F".into(),
        notes: note.into(),
        ..Default::default()
    }
}

/// Writes `record.json` (and a note attachment) into `root/name`.
pub(crate) fn folder(root: &Path, name: &str, record: &TransitionRecord) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
    std::fs::write(dir.join("note.txt"), format!("note for {name}")).unwrap();
    dir
}

/// A CTF from `from` to 8614001 holding `pupils` (`<Pupil>` elements).
pub(crate) fn ctf_from(from: &str, pupils: Vec<String>) -> Vec<u8> {
    let mut xml = Vec::new();
    let header = baton::ctf::CtfHeader::new(
        baton::Laestab::parse(from).unwrap(),
        baton::Destination::School(baton::Laestab::parse("8614001").unwrap()),
        time::macros::datetime!(2026-07-16 10:00:00),
    );
    baton::ctf::write_ctf(&mut xml, &header, pupils).unwrap();
    xml
}

pub(crate) fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) async fn setup(daemon: &Daemon, root: &Path) -> (Home, Home) {
    let primary = enrol(daemon, root, "8612001", "primary", &["staff"]).await;
    let secondary = enrol(daemon, root, "8614001", "secondary", &["dsl", "staff"]).await;
    (primary, secondary)
}

/// Sent states by pack id.
async fn states(home: &Home) -> Vec<(String, String)> {
    home.json(&["sent", "--json"])
        .await
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Item 1: three packs for one pupil pull into three stable folders, a
/// repeat pull succeeds saying so, and "downloaded" follows the write.
async fn issue13_repeat_packs_for_one_pupil_pull_into_stable_folders(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let (primary, secondary) = setup(&daemon, root.path()).await;
    for (i, note) in ["first", "second", "third"].iter().enumerate() {
        let dir = folder(root.path(), &format!("p{i}"), &record(1, note));
        primary
            .ok(&["send", "--again", "--to", "8614001", dir.to_str().unwrap()])
            .await;
    }
    assert!(states(&primary).await.iter().all(|(_, s)| s == "pending"));

    let out_dir = root.path().join("in");
    let out = out_dir.to_str().unwrap();
    let first = secondary
        .json(&["pull", "--all", "--out", out, "--json"])
        .await;
    assert_eq!(first.len(), 3);
    let folders: std::collections::BTreeSet<String> = first
        .iter()
        .map(|o| o["folder"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(folders.len(), 3, "{first:?}");
    for o in &first {
        assert_eq!(o["state"], "pulled");
        let id = o["id"].as_str().unwrap();
        let folder = PathBuf::from(o["folder"].as_str().unwrap());
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        let pupil = upn(861, 2001, 1);
        // The plain UPN or the UPN and the random tail of the pack id.
        assert!(
            name == pupil || name == format!("{pupil}-{}", &id[id.len() - 12..]),
            "{name}"
        );
    }
    assert!(
        states(&primary)
            .await
            .iter()
            .all(|(_, s)| s == "downloaded")
    );

    // Again, before acknowledging: every pack is found where it was written.
    let again = secondary
        .json(&["pull", "--all", "--out", out, "--json"])
        .await;
    assert_eq!(again.len(), 3);
    for o in &again {
        assert_eq!(o["state"], "already-pulled");
        let before = first.iter().find(|f| f["id"] == o["id"]).unwrap();
        assert_eq!(before["folder"], o["folder"]);
    }
    secondary.ok(&["ack", "--all-pulled"]).await;
}
on_both_backends!(issue13_repeat_packs_for_one_pupil_pull_into_stable_folders);

/// Item 1: a download that is not confirmed leaves the pack pending.
#[tokio::test]
async fn issue13_a_download_alone_does_not_mark_a_pack_downloaded() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let (primary, _secondary) = setup(&daemon, root.path()).await;
    let school = daemon.enrol("8614002").await;
    let dir = folder(root.path(), "p", &record(2, "x"));
    primary
        .ok(&["send", "--to", "8614002", dir.to_str().unwrap()])
        .await;
    let (id, _) = states(&primary).await.remove(0);
    let (header, _bytes) = school.download(&id).await.unwrap();
    assert_eq!(states(&primary).await[0].1, "pending");
    let mut exchange = school.exchange();
    let wrong = exchange
        .confirm_download(school.req(baton::api::v1::ConfirmDownloadRequest {
            pack_id: id.clone(),
            ciphertext_sha256: vec![0; 32],
        }))
        .await;
    assert_eq!(wrong.unwrap_err().code(), tonic::Code::InvalidArgument);
    exchange
        .confirm_download(school.req(baton::api::v1::ConfirmDownloadRequest {
            pack_id: id,
            ciphertext_sha256: header.ciphertext_sha256,
        }))
        .await
        .unwrap();
    assert_eq!(states(&primary).await[0].1, "downloaded");
}

/// The outbox folder's modification time and its files' names.
fn outbox_state(dir: &std::path::Path) -> (std::time::SystemTime, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (std::fs::metadata(dir).unwrap().modified().unwrap(), names)
}

/// Item 2: the same pupils sent again with other content are refused without
/// `--again`; the receiver's CTF holds one entry per pupil, the newest.
async fn issue13_the_same_pupils_sent_twice_are_noticed(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let (primary, secondary) = setup(&daemon, root.path()).await;
    let a = folder(root.path(), "a", &record(3, "as first sent"));
    let b = folder(root.path(), "b", &record(4, "as first sent"));
    primary
        .ok(&[
            "send",
            "--to",
            "8614001",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ])
        .await;
    let a2 = folder(root.path(), "a2", &record(3, "corrected"));
    let outbox = primary.dir.join("outbox");
    let before = outbox_state(&outbox);
    let out = primary
        .baton(&["send", "--to", "8614001", a2.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // Refused from the attachments' hashes, before sealing: nothing was
    // written to the outbox, not even a sealed file removed again.
    assert_eq!(outbox_state(&outbox), before);
    assert!(
        stderr(&out).contains("already sent to 8614001"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--again"), "{}", stderr(&out));
    assert_eq!(secondary.json(&["inbox", "--json"]).await.len(), 2);
    let out = primary
        .ok(&["send", "--again", "--to", "8614001", a2.to_str().unwrap()])
        .await;
    assert!(out.contains("sent 1, already sent 0, failed 0"), "{out}");
    // An exact rerun is still only "already sent".
    let out = primary
        .ok(&["send", "--to", "8614001", a2.to_str().unwrap()])
        .await;
    assert!(out.contains("sent 0, already sent 1"), "{out}");

    let out_dir = root.path().join("in");
    let mis = root.path().join("mis");
    let pulled = secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--ctf-dir",
            mis.to_str().unwrap(),
        ])
        .await;
    assert!(pulled.contains("has a newer pack"), "{pulled}");
    let files: Vec<PathBuf> = std::fs::read_dir(&mis)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let xml = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(xml.matches("<Pupil>").count(), 2, "{xml}");
    assert_eq!(xml.matches(&upn(861, 2001, 3)).count(), 1, "{xml}");
    // The newest pack's record went into the CTF, and a repeat pull adds nothing.
    secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--ctf-dir",
            mis.to_str().unwrap(),
        ])
        .await;
    assert_eq!(std::fs::read_dir(&mis).unwrap().count(), 1);
}
on_both_backends!(issue13_the_same_pupils_sent_twice_are_noticed);

/// Item 4: a key change strands packs: revoking warns, the sender reseals,
/// and a device whose token was revoked re-enrols in the same home.
#[tokio::test]
async fn issue13_packs_stranded_by_a_key_change_can_be_resealed() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let (primary, old_device) = setup(&daemon, root.path()).await;
    let dirs: Vec<PathBuf> = (10..12)
        .map(|i| folder(root.path(), &format!("s{i}"), &record(i, "stranded")))
        .collect();
    let mut args = vec!["send", "--to", "8614001"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    primary.ok(&args).await;
    // One more pack, pulled on the old device before it goes: it was
    // opened, so it is neither counted by `keys revoke` nor resealed.
    let opened = folder(root.path(), "s12", &record(12, "opened"));
    let opened_args = ["send", "--to", "8614001", opened.to_str().unwrap()];
    primary.ok(&opened_args).await;
    let old_out = root.path().join("old-in");
    let inbox = old_device.json(&["inbox", "--json"]).await;
    let opened_id = inbox
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .max()
        .unwrap();
    old_device
        .ok(&["pull", &opened_id, "--out", old_out.to_str().unwrap()])
        .await;

    // The school replaces its only device.
    let new_code = code(&daemon, "8614001").await;
    let new_device = init(
        &daemon,
        &root.path().join("new"),
        "8614001",
        &new_code,
        &["dsl", "staff"],
    )
    .await;
    let exported: serde_json::Value =
        serde_json::from_str(&old_device.ok(&["keys", "export", "--json"]).await).unwrap();
    let old_id = exported["id"].as_str().unwrap().to_string();
    let out = new_device.baton(&["keys", "revoke", &old_id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("2 pack(s) waiting for 8614001 are sealed only to key"),
        "{}",
        stderr(&out)
    );
    new_device.ok(&["keys", "revoke", &old_id, "--force"]).await;

    // The new device skips what it cannot open.
    let out_dir = root.path().join("in");
    let out = new_device
        .baton(&["pull", "--all", "--out", out_dir.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not sealed to this device"));

    // The sender is told, and reseals.
    primary.ok(&["schools", "trust", "8614001"]).await;
    let out = primary.ok(&args).await;
    assert!(out.contains("already sent 2"), "{out}");
    let mut reseal = args.clone();
    reseal.insert(1, "--reseal");
    let out = primary.ok(&reseal).await;
    assert!(out.contains("sent 2, already sent 0"), "{out}");
    let mut opened_reseal = opened_args.to_vec();
    opened_reseal.insert(1, "--reseal");
    let out = primary.ok(&opened_reseal).await;
    assert!(out.contains("sent 0, already sent 1"), "{out}");
    // A reseal whose upload failed for good is still a reseal when run
    // again, not "a second pack for the same pupil".
    let journal = primary.dir.join("outbox");
    let resealed: Vec<PathBuf> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"replaces\"")))
        .collect();
    assert_eq!(resealed.len(), 2, "{resealed:?}");
    let mut failed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&resealed[0]).unwrap()).unwrap();
    failed["state"] = "failed".into();
    std::fs::write(&resealed[0], failed.to_string()).unwrap();
    let out = primary.ok(&reseal).await;
    assert!(out.contains("sent 1, already sent 1"), "{out}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&resealed[0]).unwrap()).unwrap();
    assert_eq!(again["state"], "sent");
    assert_eq!(again["replaces"], failed["replaces"]);
    let pulled = new_device
        .json(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_eq!(pulled.len(), 3, "{pulled:?}");
    assert!(pulled.iter().all(|p| p["state"] == "pulled"));

    // The primary's token is revoked; it re-enrols in the same home and
    // keeps its journal (names in `sent` come from it).
    let out = daemon
        .admin(&["admin", "token", "revoke", "--school", "8612001"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = primary.baton(&["sent"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--reenrol"), "{}", stderr(&out));
    let again = code(&daemon, "8612001").await;
    let ca = daemon.ca.display().to_string();
    primary
        .ok(&[
            "init",
            "--reenrol",
            "--server",
            &daemon.url,
            "--ca",
            &ca,
            "--school",
            "8612001",
            "--code",
            &again,
        ])
        .await;
    let sent = primary.json(&["sent", "--json"]).await;
    assert_eq!(sent.len(), 6, "{sent:?}");
    // The reseal this test marked failed had in fact reached the server;
    // its journal entry now describes the reseal sent after it, so that one
    // pack alone has no name.
    let unnamed = sent.iter().filter(|e| e["name"] == "").count();
    assert_eq!(unnamed, 1, "{sent:?}");
    assert!(
        sent.iter().filter(|e| e["name"] != "").all(|e| [
            "Robin Pilot10",
            "Robin Pilot11",
            "Robin Pilot12"
        ]
        .contains(&e["name"].as_str().unwrap())),
        "{sent:?}"
    );
}

/// Item 4: a device that re-enrols still opens the packs sealed to its old
/// key, and a re-enrolment interrupted before config.json was written (so it
/// names the old key) never overwrites the old identity when run again.
#[tokio::test]
async fn issue13_a_reenrolled_device_still_opens_packs_sealed_to_its_old_key() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let (primary, secondary) = setup(&daemon, root.path()).await;
    let a = folder(root.path(), "r1", &record(21, "before re-enrolment"));
    primary
        .ok(&["send", "--to", "8614001", a.to_str().unwrap()])
        .await;
    let reenrol = |code: String| {
        let ca = daemon.ca.display().to_string();
        let url = daemon.url.clone();
        let home = secondary.clone();
        async move {
            home.ok(&[
                "init",
                "--reenrol",
                "--server",
                &url,
                "--ca",
                &ca,
                "--school",
                "8614001",
                "--code",
                &code,
                "--role",
                "dsl",
                "--role",
                "staff",
            ])
            .await
        }
    };
    let config = secondary.dir.join("config.json");
    let first_key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    reenrol(code(&daemon, "8614001").await).await;
    // As if the first re-enrolment stopped before writing config.json.
    std::fs::write(&config, first_key.to_string()).unwrap();
    reenrol(code(&daemon, "8614001").await).await;
    let retired: Vec<String> = std::fs::read_dir(&secondary.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".retired.txt"))
        .collect();
    assert_eq!(retired.len(), 2, "{retired:?}");
    let first_id = first_key["key_id"].as_str().unwrap();
    assert!(
        retired.contains(&format!("identity-{first_id}.retired.txt")),
        "{retired:?}"
    );

    let out_dir = root.path().join("in");
    let pulled = secondary
        .json(&[
            "pull",
            "--all",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert_eq!(pulled[0]["state"], "pulled");
    let folder = pulled[0]["folder"].as_str().unwrap();
    assert!(
        std::fs::read_to_string(Path::new(folder).join("record.json"))
            .unwrap()
            .contains("before re-enrolment")
    );
}

/// Item 2 (sending side): a pack sealed by a send that did not finish
/// counts as sent when a second pack for the same pupil comes along, and
/// the message says to finish the first send.
#[tokio::test]
async fn issue13_an_unfinished_send_counts_for_the_duplicate_check() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let (primary, _secondary) = setup(&daemon, root.path()).await;
    let a = folder(root.path(), "u1", &record(31, "first"));
    primary
        .ok(&["send", "--to", "8614001", a.to_str().unwrap()])
        .await;
    // What a send stopped between sealing and the server's confirmation
    // leaves: the entry still "sealed", its ciphertext beside it.
    let journal = primary.dir.join("outbox");
    let entry_path = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let mut entry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&entry_path).unwrap()).unwrap();
    entry["state"] = "sealed".into();
    std::fs::write(&entry_path, entry.to_string()).unwrap();
    std::fs::write(entry_path.with_extension("age"), b"sealed bytes").unwrap();

    let b = folder(root.path(), "u2", &record(31, "second"));
    let out = primary
        .baton(&["send", "--to", "8614001", b.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("was sealed but its send did not finish"),
        "{}",
        stderr(&out)
    );
}

/// Item 2 (receiving side): the CTF marks survive a pack folder that moved
/// (pulled again, its pupil is not written into another CTF) and a CTF that
/// could not be written for one school (the other school's pupils are
/// marked, and not written twice when the first is written later).
#[tokio::test]
async fn issue13_ctf_marks_survive_a_moved_folder_and_a_failed_write() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let (primary, secondary) = setup(&daemon, root.path()).await;
    let other = enrol(&daemon, root.path(), "8612002", "primary", &["staff"]).await;
    let a = folder(root.path(), "m1", &record(41, "from the first"));
    primary
        .ok(&["send", "--to", "8614001", a.to_str().unwrap()])
        .await;
    let mut b_record = record(42, "from the second");
    b_record.upn = upn(861, 2002, 42);
    let b = folder(root.path(), "m2", &b_record);
    other
        .ok(&["send", "--to", "8614001", b.to_str().unwrap()])
        .await;

    // 8612001's CTF cannot be written: every file name for it is taken.
    let mis = root.path().join("mis");
    std::fs::create_dir_all(&mis).unwrap();
    let from = baton::Laestab::parse("8612001").unwrap();
    let to = baton::Laestab::parse("8614001").unwrap();
    for n in 1..1000 {
        std::fs::write(mis.join(baton::ctf::file_name(from, to, n)), b"").unwrap();
    }
    let out_dir = root.path().join("in");
    let pull = |out: PathBuf| {
        let home = secondary.clone();
        let mis = mis.clone();
        async move {
            home.ok(&[
                "pull",
                "--all",
                "--out",
                out.to_str().unwrap(),
                "--ctf-dir",
                mis.to_str().unwrap(),
            ])
            .await
        }
    };
    let said = pull(out_dir.clone()).await;
    assert!(said.contains("no CTF written for 8612001"), "{said}");
    assert!(said.contains("1 pupil(s) from 8612002"), "{said}");
    let ctfs = |from: &str| {
        std::fs::read_dir(&mis)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with(from)
                    && std::fs::metadata(p).unwrap().len() > 0
            })
            .count()
    };
    assert_eq!(ctfs("8612002"), 1);

    // Room again for 8612001; the pack folders have moved away meanwhile.
    for n in 1..1000 {
        std::fs::remove_file(mis.join(baton::ctf::file_name(from, to, n))).unwrap();
    }
    std::fs::rename(&out_dir, root.path().join("moved")).unwrap();
    let said = pull(out_dir.clone()).await;
    assert!(said.contains("1 pupil(s) from 8612001"), "{said}");
    assert_eq!(ctfs("8612001"), 1);
    assert_eq!(ctfs("8612002"), 1, "{said}");
    // And once more: nothing new for the MIS.
    std::fs::rename(&out_dir, root.path().join("moved-again")).unwrap();
    pull(out_dir.clone()).await;
    assert_eq!(ctfs("8612001") + ctfs("8612002"), 2);
}

/// Item 5: a destination that is not enrolled is named, by `check` too, and
/// `--skip-unaddressed` sends the rest; `check` refuses another school's CTF.
#[tokio::test]
async fn issue13_one_bad_destination_does_not_block_a_class() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let (primary, secondary) = setup(&daemon, root.path()).await;
    let header = baton::csv::COLUMNS.join(",");
    let row = |serial: u32, to: &str| {
        let r = record(serial, "");
        let mut cells: Vec<String> = baton::csv::COLUMNS.iter().map(|_| String::new()).collect();
        let set = |cells: &mut Vec<String>, col: &str, v: &str| {
            let i = baton::csv::COLUMNS.iter().position(|c| *c == col).unwrap();
            cells[i] = v.to_string();
        };
        set(&mut cells, "upn", &r.upn);
        set(&mut cells, "surname", &r.surname);
        set(&mut cells, "forename", &r.forename);
        set(&mut cells, "dob", &r.dob);
        set(&mut cells, "sex", &r.sex);
        set(&mut cells, "destination", to);
        cells.join(",")
    };
    let csv = format!(
        "{header}\n{}\n{}\n{}\n",
        row(20, "8614001"),
        row(21, "8619999"),
        row(22, "8614001")
    );
    let path = root.path().join("class.csv");
    std::fs::write(&path, csv).unwrap();
    let file = path.to_str().unwrap();

    let out = primary.baton(&["check", file]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("line 3: school 8619999 is not enrolled"),
        "{}",
        stdout(&out)
    );
    let out = primary.baton(&["send", "--csv", file]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("8619999 is not enrolled"),
        "{}",
        stderr(&out)
    );
    assert!(secondary.json(&["inbox", "--json"]).await.is_empty());
    let out = primary
        .ok(&["send", "--csv", file, "--skip-unaddressed"])
        .await;
    assert!(out.contains("sent 2"), "{out}");

    // Another school's CTF is refused by `check` in an enrolled home.
    let xml = ctf_from(
        "8612002",
        vec![baton::ctf::pupil_xml_from_record(&record(23, ""))],
    );
    let ctf = root.path().join("other.xml");
    std::fs::write(&ctf, xml).unwrap();
    let out = primary.baton(&["check", ctf.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("the CTF's source school is 8612002"),
        "{}",
        stdout(&out)
    );
    // And a pack to this school itself.
    let me = folder(root.path(), "me", &record(24, ""));
    let out = primary
        .baton(&["send", "--to", "8612001", me.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is this school"), "{}", stderr(&out));
}
