//! Issue 21 item 4: the hardened systemd unit (checked with `systemd-analyze
//! verify` where the tool is present, against the built binary) and the
//! container file's essentials.

const UNIT: &str = include_str!("../../dist/batond.service");
const CONTAINER: &str = include_str!("../../dist/Containerfile");

#[test]
fn issue21_the_unit_is_hardened_and_verifies() {
    for directive in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=\n",
        "UMask=0077",
        "ReadWritePaths=/var/lib/batond",
        "StateDirectory=batond",
        "User=batond",
    ] {
        assert!(UNIT.contains(directive), "the unit lacks {directive:?}");
    }
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: no systemd-analyze here; the unit was not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("batond.service");
    std::fs::write(
        &unit,
        UNIT.replace("/usr/local/bin/batond", env!("CARGO_BIN_EXE_batond")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn issue21_the_container_runs_batond_as_a_user_with_a_volume_and_a_health_check() {
    assert_eq!(
        CONTAINER.matches("\nFROM ").count() + usize::from(CONTAINER.starts_with("FROM ")),
        2,
        "multi-stage"
    );
    assert!(CONTAINER.contains("\nUSER batond\n"));
    assert!(CONTAINER.contains("\nVOLUME /var/lib/batond\n"));
    assert!(CONTAINER.contains("\nHEALTHCHECK "));
    assert!(CONTAINER.contains("--no-default-features --features server"));
}
