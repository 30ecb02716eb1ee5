//! Issue 20 item 5: shell completions and man pages, from clap's own
//! generators: the bash script parses (`bash -n`), every shell gets one,
//! and a man page per subcommand renders with groff (UTF-8 input through
//! preconv, as `man` does) without warnings.

use std::process::Command;

fn baton(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_HOME")
        .output()
        .unwrap()
}

#[test]
fn issue20_completions_parse_and_man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = baton(&["completions", shell]);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        // Every subcommand is offered, the newest included.
        for sub in ["send", "recall", "readdress", "pull"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        if shell == "bash" {
            let path = dir.path().join("baton.bash");
            std::fs::write(&path, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(
                check.status.success(),
                "bash -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    assert!(!baton(&["completions", "tcsh"]).status.success());

    let man = dir.path().join("man");
    let out = baton(&["man", "--out", man.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "baton.1",
        "baton-send.1",
        "baton-recall.1",
        "baton-readdress.1",
        "baton-keys-revoke.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "no {page} in {pages:?}");
    }
    let groff = Command::new("groff").arg("--version").output();
    assert!(
        groff.is_ok_and(|o| o.status.success()),
        "groff is needed for this test: apt-get install groff-base"
    );
    for page in &pages {
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww"])
            .arg(man.join(page))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "{page} renders empty");
    }
}

/// Issue 21 item 4: the daemon's completions and man pages, likewise.
#[test]
fn issue21_batond_completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    let batond = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_batond"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = batond(&["completions", "bash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("purge") && script.contains("escrow"),
        "subcommands missing"
    );
    let path = dir.path().join("batond.bash");
    std::fs::write(&path, &script).unwrap();
    assert!(
        Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    let man = dir.path().join("man");
    assert!(
        batond(&["man", "--out", man.to_str().unwrap()])
            .status
            .success()
    );
    for page in [
        "batond.1",
        "batond-serve.1",
        "batond-admin-purge.1",
        "batond-admin-backup.1",
    ] {
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww"])
            .arg(man.join(page))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
