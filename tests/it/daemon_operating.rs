//! Operating the daemon: the generated certificate covers the names schools
//! connect by (`--tls-name`), admin commands refuse a database that does
//! not exist, a second `serve` refuses a SQLite file already served, admin
//! help shows only admin options, and reflection answers in both versions.
use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, batond};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Starts `batond serve --data-dir DATA --listen 127.0.0.1:0 EXTRA...`;
/// `Ok((child, url))` once it listens, `Err(stderr)` if it exits first.
async fn serve(data: &Path, extra: &[&str]) -> Result<(Child, String), String> {
    let log = data.with_extension(format!("log-{}", rand_suffix()));
    let mut child = batond()
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the daemon neither listened nor exited within 60 s")
        .unwrap();
    let Some(url) = first.and_then(|l| l.strip_prefix("listening on ").map(String::from)) else {
        let _ = child.wait().await;
        return Err(std::fs::read_to_string(&log).unwrap_or_default());
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Stops a daemon and waits for it to go (its lock with it).
async fn stop(mut child: Child) {
    child.kill().await.unwrap();
}

/// A TLS channel to `url` trusting `ca`, checking the certificate for `name`.
async fn connect_as(url: &str, ca: &Path, name: &str) -> Result<Channel, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name(name);
    Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// True when Health/Check over a connection verified for `name` says SERVING.
async fn serving_as(url: &str, ca: &Path, name: &str) -> bool {
    let Ok(channel) = connect_as(url, ca, name).await else {
        return false;
    };
    let check = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    matches!(check, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

#[tokio::test]
async fn tls_names_are_in_the_certificate_and_reissued_by_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tls = data.join("tls");
    let ca = tls.join("ca.pem");

    let (child, url) = serve(
        &data,
        &[
            "--tls-name",
            "baton.trust.example",
            "--tls-name",
            "192.0.2.10",
        ],
    )
    .await
    .unwrap();
    assert!(serving_as(&url, &ca, "baton.trust.example").await);
    assert!(serving_as(&url, &ca, "192.0.2.10").await);
    assert!(serving_as(&url, &ca, "localhost").await);
    let refused = connect_as(&url, &ca, "other.trust.example").await;
    assert!(
        refused.is_err(),
        "a name not in the certificate was accepted"
    );
    stop(child).await;
    let ca_before = std::fs::read(&ca).unwrap();
    let leaf_before = std::fs::read(tls.join("server.pem")).unwrap();

    // Another name: the server certificate is issued again, the CA kept.
    let (child, url) = serve(&data, &["--tls-name", "Other.Trust.Example"])
        .await
        .unwrap();
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before, "the CA changed");
    let leaf_after = std::fs::read(tls.join("server.pem")).unwrap();
    assert_ne!(
        leaf_after, leaf_before,
        "the server certificate was not reissued"
    );
    assert!(serving_as(&url, &ca, "other.trust.example").await);
    assert!(serving_as(&url, &ca, "localhost").await);
    assert!(connect_as(&url, &ca, "baton.trust.example").await.is_err());
    stop(child).await;

    // The same names again (from the config file this time): nothing reissued.
    let config = dir.path().join("batond.toml");
    std::fs::write(&config, "tls_names = [\"other.trust.example\"]\n").unwrap();
    let config = config.display().to_string();
    let (child, url) = serve(&data, &["--config", &config]).await.unwrap();
    assert_eq!(std::fs::read(tls.join("server.pem")).unwrap(), leaf_after);
    assert!(serving_as(&url, &ca, "other.trust.example").await);
    stop(child).await;

    // A bad name is a usage problem named as such; so is mixing with --tls-cert.
    let err = serve(&data, &["--tls-name", "*.trust.example"]).await.err();
    assert!(
        err.as_deref().unwrap_or_default().contains("--tls-name"),
        "{err:?}"
    );
    let cert = tls.join("server.pem").display().to_string();
    let key = tls.join("server-key.pem").display().to_string();
    let mixed = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-name",
        "a.example",
    ];
    let err = serve(&data, &mixed).await.err();
    assert!(
        err.as_deref().unwrap_or_default().contains("--tls-name"),
        "{err:?}"
    );
}

#[tokio::test]
async fn default_config_lists_tls_names() {
    let out = batond().arg("default-config").output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\ntls_names = []\n"), "{text}");
}

/// `batond ARGS...` with the data directory given by `BATON_DATA_DIR`
/// when `by_env`, else by `--data-dir`.
async fn admin_in(data: &Path, by_env: bool, args: &[&str]) -> std::process::Output {
    let mut cmd = batond();
    if by_env {
        cmd.env("BATON_DATA_DIR", data);
    } else {
        cmd.arg("--data-dir").arg(data);
    }
    cmd.args(args).output().await.unwrap()
}

#[tokio::test]
async fn admin_refuses_a_missing_database_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let add = [
        "admin", "school", "add", "8612001", "--name", "Abbey", "--phase", "primary",
    ];
    let commands: [&[&str]; 4] = [
        &["admin", "school", "list"],
        &add,
        &["admin", "school", "code", "8612001"],
        &["admin", "audit", "verify"],
    ];
    for by_env in [false, true] {
        for args in commands {
            let out = admin_in(&data, by_env, args).await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            let db = data.join("baton.db");
            assert!(err.contains(&db.display().to_string()), "{args:?}: {err}");
            assert!(err.contains("--data-dir"), "{err}");
            assert!(err.contains("--database-url"), "{err}");
            assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
            assert!(!data.exists(), "{args:?} created {}", data.display());
        }
    }
    // A database URL naming a missing file: the same, naming that file.
    let elsewhere = dir.path().join("elsewhere").join("x.db");
    let out = batond()
        .arg("--database-url")
        .arg(format!("sqlite:{}", elsewhere.display()))
        .args(["admin", "school", "list"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&elsewhere.display().to_string()), "{err}");
    assert!(!elsewhere.parent().map(Path::exists).unwrap_or(true));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // `migrate` makes one on purpose; then the others work.
    let out = admin_in(&data, false, &["admin", "migrate"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin_in(&data, false, &add).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_second_serve_on_one_sqlite_file_refuses_and_the_first_serves_on() {
    let mut first = Daemon::start_sqlite(&[]).await;
    let pid = first.child.id().unwrap();
    let err = serve(&first.data, &[])
        .await
        .expect_err("a second serve started");
    assert!(err.contains("already using the database"), "{err}");
    assert!(
        err.contains(&first.db_path().display().to_string()),
        "{err}"
    );
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    // The same file through --database-url and another data directory.
    let other = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", first.db_path().display());
    let err = serve(&other.path().join("d"), &["--database-url", &url])
        .await
        .expect_err("a second serve started by URL");
    assert!(err.contains("already using the database"), "{err}");

    // The first keeps serving, and admin commands work beside it.
    assert!(serving_as(&first.url, &first.ca, "localhost").await);
    let school = first.enrol("8612001").await;
    assert_eq!(school.laestab.to_string(), "8612001");
    let out = first.admin(&["admin", "school", "list", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Once the first is gone, a new one starts on the same file.
    first.child.kill().await.unwrap();
    let (child, url) = serve(&first.data, &[]).await.unwrap();
    assert!(serving_as(&url, &first.ca, "localhost").await);
    stop(child).await;
}

/// The help text of `batond ARGS... --help`.
async fn help(args: &[&str]) -> String {
    let out = batond().args(args).arg("--help").output().await.unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn admin_help_shows_only_admin_options() {
    let serve_only = [
        "--listen",
        "--tls-cert",
        "--tls-key",
        "--tls-name",
        "--insecure-loopback",
        "--max-pack-bytes",
        "--upload-idle-timeout-secs",
    ];
    let admin: [&[&str]; 9] = [
        &["admin"],
        &["admin", "school"],
        &["admin", "school", "add"],
        &["admin", "school", "code"],
        &["admin", "school", "list"],
        &["admin", "token", "revoke"],
        &["admin", "key", "revoke"],
        &["admin", "audit", "verify"],
        &["admin", "migrate"],
    ];
    for args in admin {
        let text = help(args).await;
        for option in serve_only {
            assert!(
                !text.contains(option),
                "{args:?} --help shows {option}:\n{text}"
            );
        }
        assert!(text.contains("--data-dir"), "{args:?}:\n{text}");
        assert!(text.contains("--database-url"), "{args:?}:\n{text}");
    }
    let add = help(&["admin", "school", "add"]).await;
    assert!(add.contains("--enrolment-code-hours"), "{add}");
    let list = help(&["admin", "school", "list"]).await;
    assert!(!list.contains("--enrolment-code-hours"), "{list}");
    let serve = help(&["serve"]).await;
    for option in serve_only {
        assert!(
            serve.contains(option),
            "serve --help lacks {option}:\n{serve}"
        );
    }
    // A serve option given to an admin command is a usage error.
    let out = batond()
        .args(["--listen", "127.0.0.1:0", "admin", "school", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Lists services through one reflection version's generated client.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let request = |message| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        };
        let requests = vec![
            request(MessageRequest::ListServices(String::new())),
            request(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.Health".into(),
            )),
        ];
        let mut responses = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let mut names = Vec::new();
        let mut health_files = 0;
        while let Some(response) = responses.message().await.unwrap() {
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    names.extend(list.service.into_iter().map(|s| s.name));
                }
                Some(MessageResponse::FileDescriptorResponse(files)) => {
                    health_files += files.file_descriptor_proto.len();
                }
                other => panic!("unexpected reflection response {other:?}"),
            }
        }
        (names, health_files)
    }};
}

#[tokio::test]
async fn reflection_answers_v1_and_v1alpha_with_health_listed() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let channel = daemon.channel().await;
    let v1 = list_services!(v1, channel.clone());
    let v1alpha = list_services!(v1alpha, channel);
    for (version, (names, health_files)) in [("v1", v1), ("v1alpha", v1alpha)] {
        for service in [
            "baton.v1.Enrolment",
            "baton.v1.Directory",
            "baton.v1.Exchange",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                names.iter().any(|n| n == service),
                "{version}: {service} not in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n == "baton.v1.Federation"),
            "{version}: the federation service is not served here: {names:?}"
        );
        assert!(health_files > 0, "{version}: no descriptor for Health");
    }
}
