//! Issue 19 item 1: pupils whose next school is unknown. Without an escrow
//! the packs are refused, saying how to enable one; with the trust's escrow
//! enrolled, packs to `XXXXXXX` and `MMMMMMM` are sealed to its keys and
//! held, nothing readable on the server, listed in the escrow's inbox.

use crate::client_lifecycle::{sent, stderr};
use crate::common::Daemon;
use crate::common::cli::{enrol, init};
use crate::common::reliability::{assert_daemon_holds_no_plaintext, distinctive_record, needles};

/// A one-row class spreadsheet sending `record` to `to`.
fn spreadsheet(
    root: &std::path::Path,
    record: &baton::record::TransitionRecord,
    to: &str,
) -> String {
    let mut cells: Vec<String> = baton::csv::COLUMNS.iter().map(|_| String::new()).collect();
    for (col, value) in [
        ("upn", record.upn.as_str()),
        ("surname", &record.surname),
        ("forename", &record.forename),
        ("dob", &record.dob),
        ("sex", &record.sex),
        ("destination", to),
    ] {
        let i = baton::csv::COLUMNS.iter().position(|c| *c == col).unwrap();
        cells[i] = value.to_string();
    }
    let path = root.join(format!("class-{}.csv", record.upn));
    std::fs::write(
        &path,
        format!("{}\n{}\n", baton::csv::COLUMNS.join(","), cells.join(",")),
    )
    .unwrap();
    path.display().to_string()
}

async fn issue19_escrow_holds_unknown_destinations(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(
        &daemon,
        root.path(),
        "8612001",
        "primary",
        &["dsl", "staff"],
    )
    .await;
    let (lost, abroad) = (
        distinctive_record("Lost", 2001, 1),
        distinctive_record("Abroad", 2001, 2),
    );
    let lost_dir = root.path().join("lost");
    std::fs::create_dir_all(&lost_dir).unwrap();
    std::fs::write(lost_dir.join("record.json"), lost.to_json()).unwrap();
    let lost_dir = lost_dir.display().to_string();
    let sheet = spreadsheet(root.path(), &abroad, "MMMMMMM");

    // Without an escrow: refused, saying how to enable one.
    for args in [
        vec!["send", "--to", "XXXXXXX", lost_dir.as_str()],
        vec!["send", "--csv", sheet.as_str()],
    ] {
        let out = primary.baton(&args).await;
        assert!(!out.status.success());
        let said = stderr(&out);
        assert!(said.contains("no escrow holder"), "{said}");
        assert!(said.contains("batond admin escrow add"), "{said}");
    }
    let refused = daemon
        .admin(&[
            "admin", "school", "add", "XXXXXXX", "--name", "X", "--phase", "primary",
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("escrow add"),
        "{}",
        stderr(&refused)
    );

    let added = daemon
        .admin(&[
            "admin",
            "escrow",
            "add",
            "--name",
            "Trust data lead",
            "--json",
        ])
        .await;
    assert!(added.status.success(), "{}", stderr(&added));
    let code = serde_json::from_slice::<serde_json::Value>(&added.stdout).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let escrow = init(&daemon, root.path(), "XXXXXXX", &code, &["dsl", "staff"]).await;

    primary.ok(&["send", "--to", "XXXXXXX", &lost_dir]).await;
    primary.ok(&["send", "--csv", &sheet]).await;
    let listing = sent(&primary).await;
    let mut to: Vec<&str> = listing.iter().map(|e| e["to"].as_str().unwrap()).collect();
    to.sort_unstable();
    assert_eq!(to, ["MMMMMMM", "XXXXXXX"], "{listing:#?}");

    let held = escrow.json(&["inbox", "--json"]).await;
    assert_eq!(held.len(), 2, "{held:#?}");
    for e in &held {
        assert_eq!(e["from"], "8612001");
        assert!(e["due"].is_string(), "{e}");
    }
    let mut needles_all = needles(&lost);
    needles_all.extend(needles(&abroad));
    assert_daemon_holds_no_plaintext(&daemon, &needles_all);
    // The escrow holder can open what it holds.
    let out_dir = root.path().join("held").display().to_string();
    escrow.ok(&["pull", "--all", "--out", &out_dir]).await;
    assert!(
        root.path()
            .join("held/8612001")
            .join(&lost.upn)
            .join("record.json")
            .exists()
    );

    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    assert!(export.lines().any(|l| l.contains("escrow.add")));
    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
}

on_both_backends!(issue19_escrow_holds_unknown_destinations);
