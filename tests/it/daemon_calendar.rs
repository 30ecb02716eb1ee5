//! Issue 17 item 1: the trust's calendar, imported and shown on both
//! backends; a bad file is refused naming the term and field, and changes
//! nothing.

use crate::common::Daemon;

const CALENDAR: &str = r#"
name = "Stoke-on-Trent 2026-27"
[[term]]
start = "2026-09-03"
end = "2026-10-23"
[[term]]
start = "2026-11-02"
end = "2026-12-18"
closures = ["2026-11-20"]
"#;

async fn show(daemon: &Daemon) -> serde_json::Value {
    let out = daemon.admin(&["admin", "calendar", "show", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn issue17_the_trust_calendar_is_imported_and_shown(daemon: Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let shown = show(&daemon).await;
    assert_eq!(shown["trust_has_calendar"], false, "{shown}");
    let text = daemon.admin(&["admin", "calendar", "show"]).await;
    assert!(String::from_utf8_lossy(&text.stdout).contains("the trust has no calendar"));

    let file = dir.path().join("stoke.toml");
    std::fs::write(&file, CALENDAR).unwrap();
    let out = daemon
        .admin(&["admin", "calendar", "import", file.to_str().unwrap()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 terms, 71 school days"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A broken file names the term and field, and leaves the calendar be.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        CALENDAR.replace("closures = [\"2026-11-20\"]", "closures = [\"2026-12-20\"]"),
    )
    .unwrap();
    let out = daemon
        .admin(&["admin", "calendar", "import", bad.to_str().unwrap()])
        .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("bad.toml") && said.contains("term 2") && said.contains("2026-12-20"),
        "{said}"
    );
    // An academy's own dates need the academy enrolled.
    let out = daemon
        .admin(&[
            "admin",
            "calendar",
            "import",
            file.to_str().unwrap(),
            "--school",
            "8614001",
        ])
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enrolled"));
    let _ = daemon.enrol("8614001").await;
    let out = daemon
        .admin(&[
            "admin",
            "calendar",
            "import",
            file.to_str().unwrap(),
            "--school",
            "8614001",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let shown = show(&daemon).await;
    assert_eq!(shown["trust_has_calendar"], true, "{shown}");
    let calendars = shown["calendars"].as_array().unwrap();
    assert_eq!(calendars.len(), 2, "{shown}");
    assert_eq!(calendars[0]["school"], serde_json::Value::Null);
    assert_eq!(calendars[1]["school"], "8614001");
    let terms = calendars[0]["terms"].as_array().unwrap();
    assert_eq!(terms[1]["closures"][0], "2026-11-20");
    assert_eq!(terms[0]["school_days"], 37);
    assert_eq!(terms[1]["school_days"], 34);
    let bank = shown["bank_holidays"].as_array().unwrap();
    assert!(bank.iter().any(|d| d == "2026-12-28"), "{shown}");

    let log = daemon.admin(&["admin", "audit", "export"]).await;
    let log = String::from_utf8_lossy(&log.stdout);
    assert_eq!(log.matches("calendar.import").count(), 2, "{log}");
}

on_both_backends!(issue17_the_trust_calendar_is_imported_and_shown);
