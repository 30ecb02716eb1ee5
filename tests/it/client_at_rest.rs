//! What `baton pull` leaves on the receiving school's disk (issue 15): every
//! folder and file it writes is its owner's only, and the sender's CTF
//! `<Pupil>` element reaches the MIS file only when it is exactly one pupil,
//! the pupil of the signed record. Packs crafted by a sending school with
//! the library and uploaded over raw gRPC; the real `baton` pulls them.

use std::path::Path;

use baton::api::v1;
use baton::crypto::Draft;
use baton::ctf::pupil_xml_from_record;
use baton::pack::{Kind, Manifest, PackId};
use baton::record::TransitionRecord;

use crate::common::cli::{self, Home, enrol};
use crate::common::sealing::seal;
use crate::common::{Daemon, School};

fn pupil(serial: u32) -> TransitionRecord {
    cli::pupil("Fragment", serial)
}

/// Sends pupil `serial`'s pack folder to 8614001 from `home`.
async fn send_folder(home: &Home, root: &Path, serial: u32) -> std::process::Output {
    cli::send_records(home, root, "8614001", &[pupil(serial)]).await
}

/// Seals `record` with `ctf` as its `<Pupil>` element from `from` to
/// 8614001 and uploads it.
async fn send(from: &School, kind: Kind, record: &TransitionRecord, ctf: Option<String>) {
    let to = baton::Laestab::parse("8614001").unwrap();
    let keys = from.keys_of(&to).await;
    let draft = Draft {
        pack_id: PackId::new(),
        from: from.laestab,
        to,
        kind,
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        left_on: None,
        supersedes: None,
    };
    let manifest = Manifest {
        record: record.clone(),
        ctf_pupil_xml: ctf,
        attachments: vec![],
    };
    let (header, ciphertext) = seal(&draft, &manifest, &[], &keys, &from.identity);
    from.upload(&v1::PackHeader::from(&header), &ciphertext, 64 * 1024)
        .await
        .unwrap();
}

/// Every folder under `root` is 0700 and every file 0600; returns how many
/// of each were checked.
#[cfg(unix)]
fn private(root: &Path) -> (usize, usize) {
    use std::os::unix::fs::PermissionsExt as _;
    let (mut dirs, mut files) = (0, 0);
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "{} is {:o}",
            dir.display(),
            mode & 0o777
        );
        dirs += 1;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(
                    mode & 0o777,
                    0o600,
                    "{} is {:o}",
                    path.display(),
                    mode & 0o777
                );
                files += 1;
            }
        }
    }
    (dirs, files)
}

#[tokio::test]
async fn issue15_pulled_files_are_private_and_only_true_fragments_reach_the_ctf() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let sender = daemon.enrol("8612001").await;
    let receiver = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;

    // A fragment carrying a second pupil, one for another pupil than its
    // record, one that is not XML at all, and an honest one.
    let (a, b, c, d, e, f) = (pupil(1), pupil(2), pupil(3), pupil(4), pupil(5), pupil(6));
    let two = format!("{}{}", pupil_xml_from_record(&a), pupil_xml_from_record(&b));
    send(&sender, Kind::Transfer, &a, Some(two)).await;
    send(&sender, Kind::Transfer, &c, Some(pupil_xml_from_record(&d))).await;
    send(&sender, Kind::Transfer, &f, Some("<Pupil><UPN>".into())).await;
    send(&sender, Kind::Transfer, &e, Some(pupil_xml_from_record(&e))).await;
    send(&sender, Kind::Safeguarding, &e, None).await;

    let out = root.path().join("in");
    let mis = root.path().join("mis");
    let said = receiver
        .ok(&[
            "pull",
            "--all",
            "--out",
            out.to_str().unwrap(),
            "--ctf-dir",
            mis.to_str().unwrap(),
        ])
        .await;
    assert!(said.contains("not one well-formed pupil"), "{said}");
    assert!(
        said.contains("does not match its record (UPN differs)"),
        "{said}"
    );
    assert_eq!(said.matches("left out of the CTF").count(), 3, "{said}");
    let ctfs: Vec<_> = std::fs::read_dir(&mis)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ctfs.len(), 1, "{ctfs:?}");
    let xml = std::fs::read_to_string(&ctfs[0]).unwrap();
    assert_eq!(xml.matches("<Pupil>").count(), 1, "{xml}");
    assert!(xml.contains(&e.upn));
    for other in [&a, &b, &c, &d, &f] {
        assert!(!xml.contains(&other.upn), "{} reached the CTF", other.upn);
    }
    // The crafted packs are still there, as folders, with their records.
    for record in [&a, &c, &f] {
        let folder = out.join("8612001").join(&record.upn);
        assert!(folder.join("record.json").exists(), "{}", folder.display());
    }
    assert!(
        out.join("8612001")
            .join("safeguarding")
            .join(&e.upn)
            .exists()
    );

    #[cfg(unix)]
    {
        let (dirs, files) = private(&out);
        assert!(dirs >= 7 && files >= 10, "{dirs} folders, {files} files");
        private(&mis);
    }
}

/// Issue 15 item 5: `baton init --passphrase` keeps the private key
/// encrypted at rest (an armored age file, not the plain identity), and
/// every later command needs the passphrase.
#[tokio::test]
async fn issue15_a_passphrase_protects_the_key_at_rest() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let out = daemon
        .admin(&[
            "admin",
            "school",
            "add",
            "8614001",
            "--name",
            "B",
            "--phase",
            "secondary",
            "--json",
        ])
        .await;
    assert!(out.status.success());
    let code = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let home = root.path().join("home");
    let baton = |args: &[&str], passphrase: Option<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.env("BATON_HOME", &home).args(args);
        match passphrase {
            Some(p) => cmd.env("BATON_PASSPHRASE", p),
            None => cmd.env_remove("BATON_PASSPHRASE"),
        };
        cmd.stdin(std::process::Stdio::null());
        async move { cmd.output().await.unwrap() }
    };
    let ca = daemon.ca.display().to_string();
    let init = [
        "init",
        "--server",
        &daemon.url,
        "--ca",
        &ca,
        "--school",
        "8614001",
        "--code",
        &code,
        "--passphrase",
    ];
    let short = baton(&init, Some("short")).await;
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));
    let no_tty = baton(&init, None).await;
    assert_eq!(no_tty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("BATON_PASSPHRASE"));

    let ok = baton(&init, Some("correct horse battery")).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let file = std::fs::read_to_string(home.join("identity.txt")).unwrap();
    assert!(
        file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{file}"
    );
    assert!(!file.contains("AGE-SECRET-KEY"));

    let locked = baton(&["keys", "export"], None).await;
    assert_eq!(locked.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("passphrase"),
        "{}",
        String::from_utf8_lossy(&locked.stderr)
    );
    let wrong = baton(&["keys", "export"], Some("wrong horse battery")).await;
    assert_eq!(wrong.status.code(), Some(1));
    let open = baton(&["keys", "export"], Some("correct horse battery")).await;
    assert!(
        open.status.success(),
        "{}",
        String::from_utf8_lossy(&open.stderr)
    );

    // Without --code and without a terminal, init says how to give it.
    let other = root.path().join("other");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .env("BATON_HOME", &other)
        .args([
            "init",
            "--server",
            &daemon.url,
            "--ca",
            &ca,
            "--school",
            "8614001",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --code CODE"));
}

/// Issue 15 item 5: the sender's outbox forgets who a pupil was once the
/// pack's verified receipt is older than `keep_pupil_names_days`.
#[tokio::test]
async fn issue15_the_outbox_forgets_pupils_after_their_receipts() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let record = pupil(7);
    assert!(send_folder(&primary, root.path(), 7).await.status.success());
    let out = root.path().join("in");
    secondary
        .ok(&["pull", "--all", "--out", out.to_str().unwrap()])
        .await;
    secondary.ok(&["ack", "--all-pulled"]).await;

    let sent = primary.json(&["sent", "--json"]).await;
    assert_eq!(sent[0]["upn"], record.upn.as_str(), "{sent:?}");
    let journal = |home: &crate::common::cli::Home| {
        std::fs::read_dir(home.dir.join("outbox"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect::<String>()
    };
    assert!(journal(&primary).contains(&record.upn));

    let config_path = primary.dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config["keep_pupil_names_days"], 30);
    config["keep_pupil_names_days"] = 0.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let sent = primary.json(&["sent", "--json"]).await;
    assert_eq!(sent[0]["state"], "acknowledged");
    assert_eq!(sent[0]["receipt_verified"], true);
    assert_eq!(sent[0]["upn"], "", "{sent:?}");
    assert_eq!(sent[0]["name"], "");
    let left = journal(&primary);
    assert!(!left.contains(&record.upn), "{left}");
    assert!(!left.contains(&record.surname), "{left}");
}

/// Issue 16 item 3: the receiver checks a signed record as `baton send`
/// checks one: a sending school that bypasses its client (impossible date,
/// unknown sex code, a control character in a name) gets nothing written.
#[tokio::test]
async fn issue16_the_receiver_checks_the_record_as_send_does() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let sender = daemon.enrol("8612001").await;
    let receiver = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let mut bad = pupil(11);
    bad.dob = "2015-02-30".into();
    bad.sex = "Male".into();
    bad.surname = "Evil\u{7}Name".into();
    send(&sender, Kind::Transfer, &bad, None).await;
    let good = pupil(12);
    send(&sender, Kind::Transfer, &good, None).await;

    let out = root.path().join("in");
    let pulled = receiver
        .baton(&["pull", "--all", "--out", out.to_str().unwrap()])
        .await;
    assert_eq!(pulled.status.code(), Some(1));
    let said = String::from_utf8_lossy(&pulled.stderr);
    assert!(
        said.contains("does not pass the checks a sender makes"),
        "{said}"
    );
    assert!(said.contains("dob") && said.contains("sex"), "{said}");
    assert!(!out.join("8612001").join(&bad.upn).exists());
    assert!(
        out.join("8612001")
            .join(&good.upn)
            .join("record.json")
            .exists()
    );
}

/// Issue 16 item 5: `https` only; plaintext `http://` only to this machine
/// and only with an explicit `--insecure-loopback`.
#[tokio::test]
async fn issue16_plaintext_needs_an_explicit_flag_even_on_loopback() {
    let daemon = Daemon::start_sqlite(&["--insecure-loopback"]).await;
    assert!(
        daemon.url.starts_with("http://127.0.0.1:"),
        "{}",
        daemon.url
    );
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("unused-ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let code = |n: &str| {
        let daemon = &daemon;
        let n = n.to_string();
        async move {
            let out = daemon
                .admin(&[
                    "admin", "school", "add", &n, "--name", "S", "--phase", "primary", "--json",
                ])
                .await;
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["code"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let init = |home: &Path, code: String, flag: bool| {
        let mut args = vec![
            "init".to_string(),
            "--server".into(),
            daemon.url.clone(),
            "--ca".into(),
            ca.display().to_string(),
            "--school".into(),
            "8612001".into(),
            "--code".into(),
            code,
        ];
        if flag {
            args.push("--insecure-loopback".into());
        }
        let home = home.to_path_buf();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
                .env("BATON_HOME", &home)
                .args(&args)
                .output()
                .await
                .unwrap()
        }
    };
    let code = code("8612001").await;
    let refused = init(&root.path().join("a"), code.clone(), false).await;
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("refusing plaintext") && said.contains("--insecure-loopback"),
        "{said}"
    );
    let home = root.path().join("b");
    let ok = init(&home, code, true).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let inbox = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .env("BATON_HOME", &home)
        .args(["inbox"])
        .output()
        .await
        .unwrap();
    assert!(
        inbox.status.success(),
        "{}",
        String::from_utf8_lossy(&inbox.stderr)
    );
}

/// Issue 16 item 3: a pack this home pulled and acknowledged, offered again
/// (here by rewriting the server's database, as whoever holds it could),
/// is refused as a replay unless `--again` is given.
#[tokio::test]
async fn issue16_a_replayed_pack_is_refused() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    assert!(
        send_folder(&primary, root.path(), 13)
            .await
            .status
            .success()
    );
    let first = root.path().join("first");
    secondary
        .ok(&["pull", "--all", "--out", first.to_str().unwrap()])
        .await;
    secondary.ok(&["ack", "--all-pulled"]).await;

    let db = crate::common::open_db(&daemon.db_path()).await;
    sqlx::query("UPDATE packs SET status = 'pending', receipt = NULL, acknowledged_at_ms = NULL")
        .execute(&db)
        .await
        .unwrap();
    // The school moved the pulled folder on (into its own records).
    std::fs::rename(&first, root.path().join("filed")).unwrap();
    let again = root.path().join("again");
    let out = secondary
        .baton(&["pull", "--all", "--out", again.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("a replay?"), "{said}");
    assert!(!again.join("8612001").exists());
    secondary
        .ok(&["pull", "--all", "--again", "--out", again.to_str().unwrap()])
        .await;
    assert!(again.join("8612001").join(pupil(13).upn).exists());
}

/// Issue 16 item 3: `baton sent` believes where a pack went only when this
/// school's key signed the header: a destination rewritten in the server's
/// database is not shown as the pack's.
#[tokio::test]
async fn issue16_sent_believes_only_headers_this_school_signed() {
    use prost::Message as _;
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    assert!(
        send_folder(&primary, root.path(), 14)
            .await
            .status
            .success()
    );
    assert_eq!(primary.json(&["sent", "--json"]).await[0]["to"], "8614001");

    let db = crate::common::open_db(&daemon.db_path()).await;
    let (seq, bytes): (i64, Vec<u8>) = sqlx::query_as("SELECT seq, header FROM packs")
        .fetch_one(&db)
        .await
        .unwrap();
    let mut header = v1::PackHeader::decode(bytes.as_slice()).unwrap();
    header.to = "8614999".into();
    sqlx::query("UPDATE packs SET header = $1 WHERE seq = $2")
        .bind(header.encode_to_vec())
        .bind(seq)
        .execute(&db)
        .await
        .unwrap();
    let out = primary.baton(&["sent", "--json"]).await;
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("none of this school's keys signed it"),
        "{said}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["state"], "not signed here");
    assert_ne!(rows[0]["to"], "8614999");
}

/// Issue 16 item 1: the server cannot widen a pin by listing a key it
/// marks revoked (which would still "verify what it signed before"): any
/// key the client never saw is a key change to confirm.
#[tokio::test]
async fn issue16_a_new_key_listed_as_revoked_is_a_key_change() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    assert!(
        send_folder(&primary, root.path(), 15)
            .await
            .status
            .success()
    );

    // Whoever holds the server's database adds a key, already "revoked".
    let attacker = baton::crypto::Identity::generate();
    let public = attacker.public();
    let db = crate::common::open_db(&daemon.db_path()).await;
    sqlx::query(
        "INSERT INTO keys (key_id, laestab, age_recipient, signing_key, label, roles, \
         created_at_ms, revoked_at_ms) VALUES ($1, '8614001', $2, $3, 'old laptop', 'dsl', 1, 2)",
    )
    .bind(public.key_id().to_string())
    .bind(public.age_recipient())
    .bind(public.signing_key_bytes().to_vec())
    .execute(&db)
    .await
    .unwrap();
    let out = send_folder(&primary, root.path(), 16).await;
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("listed as already revoked"), "{said}");
    assert!(said.contains("HAVE CHANGED"), "{said}");
}
