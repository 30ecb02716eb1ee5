//! Issue 19 item 2: a school renumbered (an academy conversion) keeps its
//! keys, tokens and packs under its new LAESTAB; the old one routes to it,
//! before and after the change, and clients' pins carry over without a
//! key-change warning. On SQLite and PostgreSQL.

use crate::client_lifecycle::{ids_of, sent, stderr};
use crate::common::Daemon;
use crate::common::cli::{enrol, pupil, send_records};

async fn issue19_renumber(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let academy = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;
    let (a, b, c) = (pupil("Renum", 1), pupil("Renum", 2), pupil("Renum", 3));
    let out = send_records(&primary, root.path(), "8614001", std::slice::from_ref(&a)).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let renumber = daemon
        .admin(&[
            "admin",
            "school",
            "renumber",
            "8614001",
            "8614009",
            "--name",
            "Hulton Park Academy",
        ])
        .await;
    assert!(renumber.status.success(), "{}", stderr(&renumber));
    // Neither number is free now.
    for taken in ["8614001", "8614009"] {
        let again = daemon
            .admin(&[
                "admin", "school", "add", taken, "--name", "X", "--phase", "primary",
            ])
            .await;
        assert!(!again.status.success(), "{taken} was enrolled again");
        let onto = daemon
            .admin(&["admin", "school", "renumber", "8612001", taken])
            .await;
        assert!(!onto.status.success(), "renumbered onto {taken}");
    }

    // Sent to the old number after the change: accepted, no key warning.
    let out = send_records(&primary, root.path(), "8614001", std::slice::from_ref(&b)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("CHANGED"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("8614001 is now 8614009"),
        "{}",
        stderr(&out)
    );
    let out = send_records(&primary, root.path(), "8614009", std::slice::from_ref(&c)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("CHANGED"), "{}", stderr(&out));

    // A correction of a pack sent to the old number, addressed as before.
    let first = ids_of(&sent(&primary).await, &a.upn)[0].clone();
    let mut corrected = a.clone();
    corrected.notes = "corrected after the conversion".into();
    let dir = root.path().join("corrected");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), corrected.to_json()).unwrap();
    primary
        .ok(&[
            "send",
            "--to",
            "8614001",
            "--supersedes",
            &first,
            &dir.display().to_string(),
        ])
        .await;

    // The academy (its home still says 8614001) receives all three (the
    // first as its correction).
    let inbox = academy.json(&["inbox", "--json"]).await;
    let mut to: Vec<&str> = inbox.iter().map(|e| e["to"].as_str().unwrap()).collect();
    to.sort_unstable();
    assert_eq!(to, ["8614001", "8614001", "8614009"], "{inbox:#?}");
    let received = root.path().join("received").display().to_string();
    let ctf = root.path().join("ctf");
    academy
        .ok(&[
            "pull",
            "--all",
            "--out",
            &received,
            "--ctf-dir",
            &ctf.display().to_string(),
        ])
        .await;
    academy.ok(&["ack", "--all-pulled"]).await;
    let mut files: Vec<String> = std::fs::read_dir(&ctf)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // Named by the number each sender used.
    assert!(files.iter().any(|f| f.contains("8614001")), "{files:?}");
    assert!(files.iter().any(|f| f.contains("8614009")), "{files:?}");

    let listing = sent(&primary).await;
    for p in [&a, &b, &c] {
        let e = listing
            .iter()
            .find(|e| e["id"] == ids_of(&listing, &p.upn).last().unwrap().as_str())
            .unwrap();
        assert_eq!(e["state"], "acknowledged", "{e}");
        assert_eq!(e["receipt_verified"], true, "{e}");
    }

    // The academy still sends as its former number until its devices learn.
    let d = pupil("Back", 4);
    let out = send_records(&academy, root.path(), "8612001", std::slice::from_ref(&d)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let back = primary.json(&["inbox", "--json"]).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["from"], "8614001");
    primary
        .ok(&[
            "pull",
            "--all",
            "--out",
            &root.path().join("back").display().to_string(),
        ])
        .await;

    let schools = primary.json(&["schools", "--json"]).await;
    let row = schools.iter().find(|s| s["laestab"] == "8614009").unwrap();
    assert_eq!(row["aliases"], serde_json::json!(["8614001"]));
    assert_eq!(row["name"], "Hulton Park Academy");
    assert!(schools.iter().all(|s| s["laestab"] != "8614001"));

    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    assert!(
        export
            .lines()
            .any(|l| l.contains("school.renumber") && l.contains("8614001 -> 8614009"))
    );
}

on_both_backends!(issue19_renumber);
