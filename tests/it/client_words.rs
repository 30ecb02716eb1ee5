//! Regression tests for issue 13's messages and words: honest failure
//! messages, plain words for common failures, the README walk-through on
//! the shipped sample, CTF values checked before sealing, and CSV line
//! numbers. The real `batond` and `baton`.

use crate::common;

use std::path::PathBuf;

use crate::client_pilot::{ctf_from, folder, record, stderr, stdout};
use common::Daemon;
use common::cli::{Home, code, enrol};
use common::reliability::upn;

/// Item 6: failures a retry cannot fix say what to do instead; a pack over
/// the server's limit is caught before sealing; a daemon that is down is
/// one line.
#[tokio::test]
async fn issue13_failure_messages_are_honest() {
    let daemon = Daemon::start_sqlite(&["--max-pack-bytes", "200000"]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["dsl"]).await;
    let _staff_only = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;

    let cp = folder(root.path(), "cp", &record(30, ""));
    let out = primary
        .baton(&[
            "send",
            "--to",
            "8614001",
            "--kind",
            "safeguarding",
            cp.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no active DSL key"), "{err}");
    assert!(!err.contains("run the same command again"), "{err}");

    let big = folder(root.path(), "big", &record(31, ""));
    std::fs::write(big.join("scan.pdf"), vec![7u8; 300_000]).unwrap();
    let out = primary.baton(&["check", big.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("more than this server accepts"),
        "{}",
        stdout(&out)
    );
    let out = primary
        .baton(&["send", "--to", "8614001", big.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("more than this server accepts"));
    let outbox = primary.dir.join("outbox");
    let sealed = std::fs::read_dir(&outbox)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "age")
            })
            .count()
        })
        .unwrap_or(0);
    assert_eq!(sealed, 0);

    // The daemon goes away: one line for a class, not one per pupil.
    let dirs: Vec<PathBuf> = (40..45)
        .map(|i| folder(root.path(), &format!("d{i}"), &record(i, "")))
        .collect();
    drop(daemon);
    let mut args = vec!["send", "--to", "8614001"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    let out = primary.baton(&args).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nothing is listening"), "{err}");
}

/// Item 11: plain words for a wrong CA, an http:// URL, raw status codes and
/// usage errors.
#[tokio::test]
async fn issue13_plain_words_for_common_failures() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;

    // A CA that did not sign the server's certificate.
    let other = Daemon::start_sqlite(&[]).await;
    let fresh = Home {
        dir: root.path().join("fresh"),
    };
    let wrong_ca = other.ca.display().to_string();
    let code = code(&daemon, "8612001").await;
    let init = |ca: String, server: String| {
        let code = code.clone();
        let fresh = &fresh;
        async move {
            fresh
                .baton(&[
                    "init", "--server", &server, "--ca", &ca, "--school", "8612001", "--code",
                    &code,
                ])
                .await
        }
    };
    let out = init(wrong_ca, daemon.url.clone()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("not signed by the CA given"), "{err}");
    assert!(!err.contains("BadSignature"), "{err}");

    // http:// to another host is refused before anything is sent.
    let out = init(
        daemon.ca.display().to_string(),
        "http://baton.trust.example:50051".into(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing plaintext"),
        "{}",
        stderr(&out)
    );

    // No raw gRPC code in what users read.
    let out = primary
        .baton(&["pull", "0190a5b2-0000-7000-8000-000000000000", "--out"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let dir = root.path().join("o");
    let out = primary
        .baton(&[
            "pull",
            "0190a5b2-0000-7000-8000-000000000000",
            "--out",
            dir.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no pack"), "{err}");
    assert!(!err.contains("NotFound"), "{err}");

    // `send` with nothing to send names every way to give it packs.
    let out = primary.baton(&["send"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--ctf") && err.contains("--csv"), "{err}");

    // `check DIR` on a folder of CTFs and spreadsheets checks each.
    let folder_of = root.path().join("exports");
    std::fs::create_dir_all(&folder_of).unwrap();
    let xml = ctf_from(
        "8612001",
        vec![baton::ctf::pupil_xml_from_record(&record(50, ""))],
    );
    std::fs::write(folder_of.join("a.xml"), &xml).unwrap();
    std::fs::write(folder_of.join("b.xml"), &xml).unwrap();
    let out = Home {
        dir: root.path().join("nobody"),
    }
    .baton(&["check", folder_of.to_str().unwrap()])
    .await;
    // Two CTFs of the same pupil: read both, and the second is a duplicate.
    assert!(stdout(&out).contains("the same UPN"), "{}", stdout(&out));

    // `--label` shows the default it really uses.
    let help = Home {
        dir: root.path().join("nobody"),
    }
    .ok(&["init", "--help"])
    .await;
    assert!(help.contains("[default: "), "{help}");

    // Times in listings are ISO 8601 to the second.
    let sent = primary.json(&["keys", "--json"]).await;
    let created = sent[0]["created_at"].as_str().unwrap();
    assert_eq!(created.len(), "2026-07-20T09:15:02Z".len(), "{created}");
    assert!(created.ends_with('Z'));
}

/// Splits a README command line into words: spaces separate, double quotes
/// group, `$NAME` is replaced from `vars`.
fn words(line: &str, vars: &[(String, String)]) -> Vec<String> {
    let mut line = line.to_string();
    // Longest names first, so `$D` does not eat the start of `$DATA`.
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in &vars {
        line = line.replace(&format!("${k}"), v);
    }
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The commands of one README section's code blocks, continuation lines
/// joined, comments dropped, `&&` chains split.
fn readme_commands(title: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split(&format!("## {title}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no README section {title:?}"))
        .split("\n## ")
        .next()
        .unwrap();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split("   #").next().unwrap().trim();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        for part in std::mem::take(&mut pending).split(" && ") {
            commands.push(part.trim().to_string());
        }
    }
    commands
}

/// Runs README commands as written against `daemon`, with `$D` a temporary
/// folder: `VAR=$(batond … | tail -n 1)`, `VAR=$(baton … | awk '/WORD/
/// {print $1; exit}')` (the first word of the first line holding WORD),
/// `batond --data-dir $D/data admin …` and `baton …`; every one must
/// succeed. Returns how many `baton` and `batond admin` commands ran.
async fn run_readme(
    daemon: &Daemon,
    root: &std::path::Path,
    commands: &[String],
    vars: &mut Vec<(String, String)>,
) -> (usize, usize) {
    let data = format!("{}/data", root.display());
    let (mut ran_baton, mut ran_admin) = (0, 0);
    let baton = |w: Vec<String>| {
        let mut w = w;
        for word in &mut w {
            if word == "https://127.0.0.1:50051" {
                *word = daemon.url.clone();
            } else if *word == format!("{data}/tls/ca.pem") {
                *word = daemon.ca.display().to_string();
            }
        }
        tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(w[1..].to_vec())
            .output()
    };
    let admin = |w: Vec<String>| {
        assert_eq!(w[0], "batond");
        assert_eq!(w[1..3], ["--data-dir".to_string(), data.clone()]);
        common::batond()
            .arg("--data-dir")
            .arg(&daemon.data)
            .args(w[3..].to_vec())
            .output()
    };
    for command in commands {
        if let Some((var, rest)) = command.split_once("=$(") {
            let value = if let Some((cmd, awk)) = rest.split_once(" | awk '/") {
                let word = awk.split('/').next().unwrap();
                let out = baton(words(cmd, vars)).await.unwrap();
                assert!(out.status.success(), "{command}: {}", stderr(&out));
                ran_baton += 1;
                stdout(&out)
                    .lines()
                    .find(|l| l.contains(word))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or_else(|| panic!("{command}: no line holds {word}"))
                    .to_string()
            } else {
                let cmd = rest.split(" | tail").next().unwrap();
                let out = admin(words(cmd, vars)).await.unwrap();
                assert!(out.status.success(), "{command}: {}", stderr(&out));
                ran_admin += 1;
                stdout(&out).lines().last().unwrap().trim().to_string()
            };
            vars.push((var.to_string(), value));
        } else if command.starts_with("batond --data-dir") {
            let out = admin(words(command, vars)).await.unwrap();
            assert!(out.status.success(), "{command}: {}", stderr(&out));
            ran_admin += 1;
        } else if command.starts_with("baton ") {
            let out = baton(words(command, vars)).await.unwrap();
            assert!(
                out.status.success(),
                "{command}:\n{}\n{}",
                stdout(&out),
                stderr(&out)
            );
            ran_baton += 1;
        }
    }
    (ran_baton, ran_admin)
}

/// Item 12: every `batond … admin` and `baton` command of the README's
/// walk-through runs, as written, on the sample shipped in the repository,
/// against the real daemon, and the transfer completes; then the commands
/// of "Mistakes and endings" (issue 18) do what it says.
#[tokio::test]
async fn issue13_the_readme_walk_through_runs_on_the_shipped_sample() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let mut vars: Vec<(String, String)> = vec![
        (
            "S".into(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample").to_string(),
        ),
        ("D".into(), root.path().display().to_string()),
    ];
    let commands = readme_commands("A transfer, end to end");
    let (ran_baton, ran_admin) = run_readme(&daemon, root.path(), &commands, &mut vars).await;
    assert_eq!(ran_admin, 4, "{commands:?}");
    assert!(ran_baton >= 14, "{commands:?}");
    let primary = Home {
        dir: root.path().join("primary"),
    };
    let sent = primary.json(&["sent", "--json"]).await;
    assert_eq!(sent.len(), 17);
    assert!(
        sent.iter()
            .all(|e| e["state"] == "acknowledged" && e["receipt_verified"] == true),
        "{sent:?}"
    );
    assert!(
        root.path()
            .join("received/8612001/safeguarding/K861200119012")
            .is_dir()
    );
    let mis: Vec<_> = std::fs::read_dir(root.path().join("for-mis"))
        .unwrap()
        .collect();
    assert_eq!(mis.len(), 1);

    let commands = readme_commands("Mistakes and endings");
    let (ran_baton, ran_admin) = run_readme(&daemon, root.path(), &commands, &mut vars).await;
    assert_eq!((ran_baton, ran_admin), (7, 2), "{commands:?}");
    let sent = primary.json(&["sent", "--json"]).await;
    let state = |state: &str| sent.iter().filter(|e| e["state"] == state).count();
    assert_eq!(sent.len(), 18);
    assert_eq!(
        (state("superseded"), state("recalled")),
        (0, 1),
        "{sent:#?}"
    );
    // Every pack acknowledged was purged (the superseded one with them),
    // each keeping its verified receipt.
    assert_eq!(state("purged"), 17, "{sent:#?}");
    assert_eq!(
        sent.iter()
            .filter(|e| e["receipt_verified"] == true)
            .count(),
        17,
        "{sent:#?}"
    );
}

/// Item 3: a CTF value the receiver would refuse (`<Sex>Male</Sex>`) is
/// refused by `check` (and so by `send`, which reads its sources through
/// the same code) before anything is sealed.
#[tokio::test]
async fn issue13_ctf_values_are_validated_before_sealing() {
    let root = tempfile::tempdir().unwrap();
    let pupil = baton::ctf::pupil_xml_from_record(&record(60, ""))
        .replace("<Sex>F</Sex>", "<Sex>Male</Sex>");
    assert!(pupil.contains("<Sex>Male</Sex>"), "{pupil}");
    let xml = ctf_from("8612001", vec![pupil]);
    let path = root.path().join("8612001_CTF_8614001_001.xml");
    std::fs::write(&path, xml).unwrap();
    let nobody = Home {
        dir: root.path().join("nobody"),
    };
    let out = nobody.baton(&["check", path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("element Sex: must be M, F or U"), "{text}");
    assert!(!text.contains("Male"), "{text}");
}

/// Item 7: CSV problems name the line the row starts on, and dates get a
/// hint.
#[tokio::test]
async fn issue13_csv_problems_name_the_right_line() {
    let root = tempfile::tempdir().unwrap();
    let header = "upn,surname,forename,dob,sex,destination,notes";
    let good = format!("{},Pilot,Robin,2015-03-04,F,8614001,", upn(861, 2001, 70));
    let csv = format!(
        "{header}\r\n{good}\"one\r\ntwo\"\r\n{},Pilot,Robin,28/07/2015,F,8614001,\r\n{},Pilot,Robin,2015-02-30,F,8614001,\r\n",
        upn(861, 2001, 71),
        upn(861, 2001, 72)
    );
    let path = root.path().join("class.csv");
    std::fs::write(&path, csv).unwrap();
    let out = Home {
        dir: root.path().join("nobody"),
    }
    .baton(&["check", path.to_str().unwrap()])
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("line 4, column dob: looks like day/month/year: write dates as YYYY-MM-DD"),
        "{text}"
    );
    assert!(
        text.contains("line 5, column dob: not a real date"),
        "{text}"
    );
}
