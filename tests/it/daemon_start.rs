//! Starting the daemon: zero-configuration TLS in an empty data directory,
//! refusal of plaintext off loopback, and the configuration commands.
use crate::common;

use common::{Daemon, batond};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

#[tokio::test]
async fn serves_tls_with_its_own_ca_from_an_empty_data_dir() {
    let daemon = Daemon::start(&[]).await;
    assert!(
        daemon.url.starts_with("https://127.0.0.1:"),
        "{}",
        daemon.url
    );
    assert_eq!(daemon.ca, daemon.data.join("tls").join("ca.pem"));
    let mut health = HealthClient::new(daemon.channel().await);
    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
    let resp = health
        .check(HealthCheckRequest {
            service: "baton.v1.Exchange".into(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca-key.pem", "server-key.pem"] {
            let mode = std::fs::metadata(daemon.data.join("tls").join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is readable by others");
        }
    }
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut daemon = Daemon::start(&[]).await;
    let pid = daemon.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(20), daemon.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn plaintext_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = batond()
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--insecure-loopback", "--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing plaintext"), "{err}");
}

#[tokio::test]
async fn plaintext_on_loopback_says_http() {
    let daemon = Daemon::start(&["--insecure-loopback"]).await;
    assert!(
        daemon.url.starts_with("http://127.0.0.1:"),
        "{}",
        daemon.url
    );
}

#[tokio::test]
async fn default_config_and_usage_errors() {
    let out = batond().arg("default-config").output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_pack_bytes = 268435456"), "{text}");
    let out = batond().arg("no-such-command").output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The printed example is a valid --config file (admin commands other
    // than `migrate` need an existing database).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batond.toml");
    std::fs::write(&file, text.as_bytes()).unwrap();
    let mut listed = String::new();
    for args in [
        &["admin", "migrate"][..],
        &["admin", "school", "list", "--json"],
    ] {
        let out = batond()
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        listed = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    assert_eq!(listed.trim(), "[]");
}
