//! Issue 16: a server that lies about schools' keys. The real daemon and the
//! real `baton` CLI, with the attacker holding the server's database (and so
//! able to answer anything): keys slipped in, endorsements forged, "revoked"
//! keys that still verify what they "signed before", revocations nobody
//! signed. Each is refused, or followed only when the client can check it.

use std::path::Path;

use baton::api::v1;
use baton::crypto::{Draft, Identity};
use baton::pack::{Kind, Manifest, PackId};
use baton::record::TransitionRecord;
use baton::trust::DirectorySigner;
use prost::Message as _;

use crate::common::cli::{self, Home, code, enrol, enrol_with, init};
use crate::common::sealing::seal;
use crate::common::{Daemon, School, batond, open_db};

fn pupil(serial: u32) -> TransitionRecord {
    cli::pupil("Hostile", serial)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs `baton send` of pupil `serial`'s folder to 8614001 from `home`.
async fn send(home: &Home, root: &Path, serial: u32) -> std::process::Output {
    cli::send_records(home, root, "8614001", &[pupil(serial)]).await
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Makes a directory key in `root`; returns (public text, secret file).
async fn directory_key(root: &Path) -> (String, String) {
    let file = root.join("directory.key");
    let out = batond()
        .args(["new-directory-key", "--out", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let public = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(public.starts_with("batondir1"), "{public}");
    // The secret file is the operator's only, and never overwritten.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = batond()
        .args(["new-directory-key", "--out", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    (public, file.display().to_string())
}

async fn approve(daemon: &Daemon, laestab: &str, home: &Home, secret: &str) {
    let out = daemon.approve_key(laestab, &home.key_id(), secret).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Adds a key the attacker holds to `laestab` in the server's database,
/// with the given revocation time and endorsement.
async fn slip_in_key(
    daemon: &Daemon,
    laestab: &str,
    attacker: &Identity,
    revoked_at_ms: Option<i64>,
    endorsement: Option<[u8; 64]>,
) {
    let public = attacker.public();
    let db = open_db(&daemon.db_path()).await;
    sqlx::query(
        "INSERT INTO keys (key_id, laestab, age_recipient, signing_key, label, roles, \
         created_at_ms, revoked_at_ms, endorsement) VALUES ($1, $2, $3, $4, 'DSL laptop', 'dsl,staff', 1, $5, $6)",
    )
    .bind(public.key_id().to_string())
    .bind(laestab)
    .bind(public.age_recipient())
    .bind(public.signing_key_bytes().to_vec())
    .bind(revoked_at_ms)
    .bind(endorsement.map(|e| e.to_vec()))
    .execute(&db)
    .await
    .unwrap();
}

/// The recipient key ids of the newest pack in the server's database.
async fn newest_recipients(daemon: &Daemon) -> Vec<String> {
    let db = open_db(&daemon.db_path()).await;
    let (header,): (Vec<u8>,) =
        sqlx::query_as("SELECT header FROM packs ORDER BY seq DESC LIMIT 1")
            .fetch_one(&db)
            .await
            .unwrap();
    v1::PackHeader::decode(header.as_slice())
        .unwrap()
        .recipient_key_ids
}

/// With the trust's directory key pinned, the server can hand out no key of
/// its own: not on first contact, not later, not with an endorsement made
/// by another key; until the operator approves a school's key nothing is
/// sealed to it, and it signs nothing the other school accepts.
#[tokio::test]
async fn issue16_only_keys_the_directory_key_endorsed_are_sealed_to() {
    let root = tempfile::tempdir().unwrap();
    let (public, secret) = directory_key(root.path()).await;
    let daemon = Daemon::start_sqlite(&["--directory-key", &public]).await;
    let pin = ["--directory-key", public.as_str()];
    let primary = enrol_with(&daemon, root.path(), "8612001", "primary", &["staff"], &pin).await;
    let secondary = enrol_with(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["staff"],
        &pin,
    )
    .await;

    // Nothing is approved yet: nothing can be sealed to the secondary.
    let out = send(&primary, root.path(), 1).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("approved by the trust's directory key"),
        "{}",
        stderr(&out)
    );
    let pending = daemon.admin(&["admin", "key", "pending", "--json"]).await;
    let pending: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending}");

    // A secret key that is not the configured one approves nothing.
    let other = root.path().join("other.key");
    std::fs::write(
        &other,
        &*DirectorySigner::generate().unwrap().to_secret_text(),
    )
    .unwrap();
    let wrong = daemon
        .admin(&[
            "admin",
            "key",
            "approve",
            "8614001",
            &secondary.key_id(),
            "--directory-key-file",
            other.to_str().unwrap(),
            "--directory-key",
            &public,
        ])
        .await;
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("not the directory key"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    approve(&daemon, "8614001", &secondary, &secret).await;
    // The primary's own key is not approved: the daemon refuses what it signs.
    let out = send(&primary, root.path(), 2).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not yet approved"),
        "{}",
        stderr(&out)
    );
    approve(&daemon, "8612001", &primary, &secret).await;
    assert!(send(&primary, root.path(), 3).await.status.success());
    let pulled = secondary
        .ok(&[
            "pull",
            "--all",
            "--json",
            "--out",
            root.path().join("in").to_str().unwrap(),
        ])
        .await;
    assert!(pulled.contains("\"state\": \"pulled\""), "{pulled}");
    // The receipt comes back verified, and the sender believes its own
    // pack (signed by a key that was approved after `baton init`).
    secondary.ok(&["ack", "--all-pulled"]).await;
    let rows = primary.json(&["sent", "--json"]).await;
    let acked: Vec<_> = rows
        .iter()
        .filter(|r| r["state"] == "acknowledged")
        .collect();
    assert_eq!(acked.len(), 1, "{rows:?}");
    assert_eq!(acked[0]["receipt_verified"], true, "{}", acked[0]);
    let unapproved = rows.iter().find(|r| r["state"] == "not sent").unwrap();
    assert!(
        unapproved["error"]
            .as_str()
            .unwrap()
            .contains("this device's key is not approved yet"),
        "{unapproved}"
    );

    // The server's owner slips in a key with an endorsement of their own
    // making: it is not pinned, nothing is sealed to it.
    let attacker = Identity::generate();
    let forger = DirectorySigner::generate().unwrap();
    let mut fake = crate::common::sealing::school_key(&attacker, &[baton::keys::Role::Dsl]);
    fake.label = "DSL laptop".into();
    fake.roles = vec![baton::keys::Role::Dsl, baton::keys::Role::Staff];
    let forged = forger.endorse(&"8614001".parse().unwrap(), &fake);
    slip_in_key(&daemon, "8614001", &attacker, None, Some(forged)).await;
    let out = send(&primary, root.path(), 4).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not approved by the trust's directory key"),
        "{}",
        stderr(&out)
    );
    let recipients = newest_recipients(&daemon).await;
    assert_eq!(recipients, vec![secondary.key_id()]);
    assert!(!recipients.contains(&attacker.key_id().to_string()));
    let shown = primary.ok(&["schools", "show", "8614001"]).await;
    assert!(shown.contains("not pinned: not approved"), "{shown}");
}

/// A revocation the client can verify (signed by the school's DSL key, or
/// by the directory key) is followed; one nobody signed is a key change to
/// confirm, and so is a forged signature.
#[tokio::test]
async fn issue16_revocations_are_followed_only_when_signed() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_sqlite(&[]).await;
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let dsl = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;
    let staff = init(
        &daemon,
        root.path(),
        "8614001",
        &code(&daemon, "8614001").await,
        &["staff"],
    )
    .await;
    let senco = init(
        &daemon,
        root.path(),
        "8614001",
        &code(&daemon, "8614001").await,
        &["senco"],
    )
    .await;
    let office = init(
        &daemon,
        root.path(),
        "8614001",
        &code(&daemon, "8614001").await,
        &["staff", "senco"],
    )
    .await;
    assert!(send(&primary, root.path(), 1).await.status.success());

    // The DSL revokes the staff device's key from the DSL's own device.
    dsl.ok(&["keys", "revoke", &staff.key_id(), "--force"])
        .await;
    let out = send(&primary, root.path(), 2).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("HAVE CHANGED"), "{}", stderr(&out));

    // The operator revokes the SENCo's key without signing it.
    let out = daemon
        .admin(&["admin", "key", "revoke", "8614001", &senco.key_id()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = send(&primary, root.path(), 3).await;
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("HAVE CHANGED"), "{said}");
    assert!(said.contains("without a revocation signed"), "{said}");
    primary.ok(&["schools", "trust", "8614001"]).await;
    assert!(send(&primary, root.path(), 4).await.status.success());

    // The server's owner revokes the office key and forges the DSL's
    // signature on it.
    let db = open_db(&daemon.db_path()).await;
    sqlx::query(
        "UPDATE keys SET revoked_at_ms = $1, revoked_by = $2, revocation_signature = $3 WHERE key_id = $4",
    )
    .bind(now_ms())
    .bind(dsl.key_id())
    .bind(vec![7u8; 64])
    .bind(office.key_id())
    .execute(&db)
    .await
    .unwrap();
    let out = send(&primary, root.path(), 5).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("without a revocation signed"),
        "{}",
        stderr(&out)
    );
    let shown = primary
        .json_value(&["schools", "show", "8614001", "--json"])
        .await;
    assert_eq!(shown["pin"], "CHANGED since pinned", "{shown}");
    let office_row = shown["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == office.key_id())
        .unwrap()
        .clone();
    assert!(
        office_row["pin"]
            .as_str()
            .unwrap()
            .contains("pinned as active"),
        "{office_row}"
    );
}

/// The revoked-key trick on the receiving side: the server's owner adds a
/// key of their own to the sending school, signs a pack with it, then marks
/// the key revoked after the pack's date so it "verified what it signed
/// before". The receiver never pinned the key: the pull is refused and
/// nothing is written.
#[tokio::test]
async fn issue16_pull_refuses_a_pack_signed_by_a_slipped_in_revoked_key() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_sqlite(&[]).await;
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    assert!(send(&primary, root.path(), 1).await.status.success());
    let inbox = root.path().join("in");
    let inbox_arg = inbox.to_str().unwrap();
    secondary.ok(&["pull", "--all", "--out", inbox_arg]).await;
    let before = std::fs::read_dir(&inbox).unwrap().count();

    let attacker = Identity::generate();
    slip_in_key(&daemon, "8612001", &attacker, None, None).await;
    let forger = School {
        laestab: "8612001".parse().unwrap(),
        identity: attacker,
        token: primary.token(),
        channel: daemon.channel().await,
    };
    let to = "8614001".parse().unwrap();
    let keys = forger.keys_of(&to).await;
    let created = now_ms() - 60_000;
    let draft = Draft {
        pack_id: PackId::new(),
        from: forger.laestab,
        to,
        kind: Kind::Transfer,
        created_at_ms: created,
        left_on: None,
        supersedes: None,
    };
    let manifest = Manifest {
        record: pupil(66),
        ctf_pupil_xml: None,
        attachments: vec![],
    };
    let (header, ciphertext) = seal(&draft, &manifest, &[], &keys, &forger.identity);
    forger
        .upload(&v1::PackHeader::from(&header), &ciphertext, 64 * 1024)
        .await
        .unwrap();
    let db = open_db(&daemon.db_path()).await;
    sqlx::query("UPDATE keys SET revoked_at_ms = $1 WHERE key_id = $2")
        .bind(created + 1)
        .bind(forger.identity.key_id().to_string())
        .execute(&db)
        .await
        .unwrap();

    let out = secondary
        .baton(&["pull", "--all", "--out", inbox_arg])
        .await;
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(said.contains("listed as already revoked"), "{said}");
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), before);
    let written = walk(&inbox);
    assert!(!written.contains("Hostile66"), "{written}");
}

/// Every file's contents under `dir`, concatenated.
fn walk(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.push_str(&walk(&path));
        } else {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    all
}

/// The revoked-key trick on the sending side: the server's owner writes a
/// receipt signed by a key of their own into the database, lists the key
/// under the destination marked revoked after the receipt's date, and
/// marks the pack acknowledged. `baton sent` does not call it verified.
#[tokio::test]
async fn issue16_sent_does_not_verify_a_receipt_from_a_slipped_in_key() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_sqlite(&[]).await;
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    assert!(send(&primary, root.path(), 1).await.status.success());
    let db = open_db(&daemon.db_path()).await;
    let (header,): (Vec<u8>,) = sqlx::query_as("SELECT header FROM packs")
        .fetch_one(&db)
        .await
        .unwrap();
    let header = v1::PackHeader::decode(header.as_slice()).unwrap();

    let attacker = Identity::generate();
    let received = now_ms() - 1000;
    let receipt = attacker
        .sign_receipt(baton::pack::Receipt {
            pack_id: header.pack_id.parse().unwrap(),
            ciphertext_sha256: header.ciphertext_sha256.clone().try_into().unwrap(),
            received_at_ms: received,
            recipient_key_id: attacker.key_id(),
        })
        .unwrap();
    slip_in_key(&daemon, "8614001", &attacker, Some(received + 1), None).await;
    sqlx::query(
        "UPDATE packs SET receipt = $1, status = 'acknowledged', acknowledged_at_ms = $2 WHERE pack_id = $3",
    )
    .bind(v1::Receipt::from(&receipt).encode_to_vec())
    .bind(received)
    .bind(&header.pack_id)
    .execute(&db)
    .await
    .unwrap();

    let rows = primary.json(&["sent", "--json"]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["receipt_verified"], false, "{}", rows[0]);
    assert_ne!(rows[0]["state"], "acknowledged", "{}", rows[0]);
}

/// A stolen device's key, revoked by the school's DSL: a pack it signs
/// dated after the revocation is refused by the receiver even when the
/// server stores it (here it was uploaded before the revocation, dated
/// ahead), and nothing of it is written.
#[tokio::test]
async fn issue16_a_revoked_key_verifies_nothing_dated_after_its_revocation() {
    let root = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_sqlite(&[]).await;
    let office = enrol(
        &daemon,
        root.path(),
        "8612001",
        "primary",
        &["dsl", "staff"],
    )
    .await;
    let laptop = init(
        &daemon,
        root.path(),
        "8612001",
        &code(&daemon, "8612001").await,
        &["staff"],
    )
    .await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    assert!(send(&office, root.path(), 1).await.status.success());
    let inbox = root.path().join("in");
    let inbox_arg = inbox.to_str().unwrap();
    secondary.ok(&["pull", "--all", "--out", inbox_arg]).await;

    // Whoever stole the laptop signs a pack dated ten minutes ahead.
    let stolen = Identity::from_file_bytes(
        &std::fs::read(laptop.dir.join("identity.txt")).unwrap(),
        None,
    )
    .unwrap();
    let thief = School {
        laestab: "8612001".parse().unwrap(),
        identity: stolen,
        token: laptop.token(),
        channel: daemon.channel().await,
    };
    let to = "8614001".parse().unwrap();
    let keys = thief.keys_of(&to).await;
    let draft = Draft {
        pack_id: PackId::new(),
        from: thief.laestab,
        to,
        kind: Kind::Transfer,
        created_at_ms: now_ms() + 600_000,
        left_on: None,
        supersedes: None,
    };
    let manifest = Manifest {
        record: pupil(77),
        ctf_pupil_xml: None,
        attachments: vec![],
    };
    let (header, ciphertext) = seal(&draft, &manifest, &[], &keys, &thief.identity);
    thief
        .upload(&v1::PackHeader::from(&header), &ciphertext, 64 * 1024)
        .await
        .unwrap();
    // The DSL revokes the laptop's key from the office PC (signed, so the
    // secondary follows it without asking).
    office
        .ok(&["keys", "revoke", &laptop.key_id(), "--force"])
        .await;

    let out = secondary
        .baton(&["pull", "--all", "--out", inbox_arg])
        .await;
    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("after that key was revoked"), "{said}");
    assert!(!said.contains("HAVE CHANGED"), "{said}");
    assert!(!walk(&inbox).contains("Hostile77"));
}
