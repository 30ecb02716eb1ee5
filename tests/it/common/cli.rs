//! Driving the real `baton` CLI from tests: one home per school, enrolled
//! through `batond admin` and `baton init`.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::Daemon;
use super::reliability::upn;
use baton::record::TransitionRecord;

/// A minimal valid record for pupil `serial` of 861/2001, surname
/// `{surname}{serial}`.
pub fn pupil(surname: &str, serial: u32) -> TransitionRecord {
    TransitionRecord {
        upn: upn(861, 2001, serial),
        surname: format!("{surname}{serial}"),
        forename: "Sam".into(),
        dob: "2015-05-06".into(),
        sex: "M".into(),
        ..Default::default()
    }
}

/// Writes each record as a pack folder under `root` and runs `baton send
/// --to TO` for them from `home`; returns the CLI's output.
pub async fn send_records(
    home: &Home,
    root: &Path,
    to: &str,
    records: &[TransitionRecord],
) -> Output {
    let mut folders = Vec::new();
    for record in records {
        let dir = root.join(format!("pupil-{}", record.upn));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
        folders.push(dir.display().to_string());
    }
    let mut args = vec!["send", "--to", to];
    args.extend(folders.iter().map(String::as_str));
    home.baton(&args).await
}

/// A school's home for the `baton` CLI.
#[derive(Clone)]
pub struct Home {
    /// The home folder.
    pub dir: PathBuf,
}

impl Home {
    /// Runs `baton ARGS` in this home.
    pub async fn baton(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .env("BATON_HOME", &self.dir)
            .env_remove("BATON_PASSPHRASE")
            .args(args)
            .output()
            .await
            .unwrap()
    }

    /// Runs `baton ARGS` and expects success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.baton(args).await;
        assert!(
            out.status.success(),
            "baton {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a `--json` listing and returns its array.
    pub async fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.ok(args).await)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Enrols a school with the operator's command and `baton init`.
pub async fn enrol(
    daemon: &Daemon,
    root: &Path,
    laestab: &str,
    phase: &str,
    roles: &[&str],
) -> Home {
    enrol_with(daemon, root, laestab, phase, roles, &[]).await
}

/// [`enrol`], passing `extra` to `baton init`.
pub async fn enrol_with(
    daemon: &Daemon,
    root: &Path,
    laestab: &str,
    phase: &str,
    roles: &[&str],
    extra: &[&str],
) -> Home {
    let mut args = vec![
        "admin", "school", "add", laestab, "--name", "School", "--phase", phase, "--json",
    ];
    for role in roles {
        args.extend(["--role", role]);
    }
    let out = daemon.admin(&args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    init_with(daemon, root, laestab, &code, roles, extra).await
}

/// `baton init` in a new home for `laestab` with `code`.
pub async fn init(daemon: &Daemon, root: &Path, laestab: &str, code: &str, roles: &[&str]) -> Home {
    init_with(daemon, root, laestab, code, roles, &[]).await
}

/// [`init`], passing `extra` to `baton init`.
pub async fn init_with(
    daemon: &Daemon,
    root: &Path,
    laestab: &str,
    code: &str,
    roles: &[&str],
    extra: &[&str],
) -> Home {
    let home = Home {
        dir: root.join(format!("home-{laestab}-{}", roles.join("-"))),
    };
    let ca = daemon.ca.display().to_string();
    let mut args = vec![
        "init",
        "--server",
        &daemon.url,
        "--ca",
        &ca,
        "--school",
        laestab,
        "--code",
        code,
    ];
    for r in roles {
        args.extend(["--role", r]);
    }
    args.extend(extra);
    home.ok(&args).await;
    home
}

impl Home {
    /// This home's key id, from its `config.json`.
    pub fn key_id(&self) -> String {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("config.json")).unwrap()).unwrap();
        config["key_id"].as_str().unwrap().to_string()
    }

    /// Runs a `--json` command and returns its value.
    pub async fn json_value(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args).await).unwrap()
    }

    /// This home's API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("token"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// Issues another enrolment code for an enrolled school, granting every
/// role (the test says which the key asks for).
pub async fn code(daemon: &Daemon, laestab: &str) -> String {
    let out = daemon
        .admin(&[
            "admin", "school", "code", laestab, "--json", "--role", "dsl", "--role", "senco",
            "--role", "staff",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A key id as people read it: groups of four hex digits.
pub fn grouped(key_id: &str) -> String {
    key_id
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
