//! Certificates without restarts: the operator's own files are read again
//! on SIGHUP (a bad file is refused and the old certificate kept), and the
//! generated certificate is issued again, by the same CA, when it nears
//! its end — at start and on SIGHUP. Connections already open survive.
use std::path::Path;

use baton::api::v1;
use common::Daemon;
use common::web::{not_after, served_cert};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::common;

/// A CA of the test's own.
fn test_ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf for localhost and 127.0.0.1 from `issuer`, valid `days`: (cert, key).
fn leaf(issuer: &Issuer<'_, KeyPair>, days: i64) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes a file in one step (as certbot's rename does).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn hangup(daemon: &Daemon) {
    let pid = daemon.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until a new connection is served a certificate `pred` accepts.
async fn until_served(address: &str, ca: &Path, pred: impl Fn(i64) -> bool) -> i64 {
    for _ in 0..200 {
        if let Ok(cert) = served_cert(address, ca, "localhost").await {
            let end = not_after(&cert);
            if pred(end) {
                return end;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the daemon never served the expected certificate");
}

fn days_from_now(days: i64) -> i64 {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days)).unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue21_given_certificates_are_read_again_on_sighup_without_dropping_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, issuer) = test_ca();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let (cert_a, key_a) = leaf(&issuer, 40);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let mut daemon = Daemon::start_sqlite(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    daemon.ca = ca.clone();
    let address = daemon.url.trim_start_matches("https://").to_string();
    let first = until_served(&address, &ca, |end| end < days_from_now(41)).await;

    // A school watching for arrivals on a connection opened before.
    let channel = common::tls_channel(&daemon.url, &ca).await;
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let mut watch = b
        .via(&channel)
        .exchange()
        .watch(b.req(v1::WatchRequest {}))
        .await
        .unwrap()
        .into_inner();

    // The operator renews: a new certificate and key, then SIGHUP.
    let (cert_b, key_b) = leaf(&issuer, 400);
    replace(&key, &key_b);
    replace(&cert, &cert_b);
    hangup(&daemon);
    let second = until_served(&address, &ca, |end| end > days_from_now(300)).await;
    assert_ne!(first, second);

    // The connection opened before the reload still carries calls and its
    // stream: an arrival reaches the watcher.
    let keys = a.keys_of(&b.laestab).await;
    let data = common::ciphertext(3000);
    let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    a.upload(&header, &data, 8192).await.unwrap();
    let event = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("the watch stream went quiet")
        .unwrap()
        .unwrap();
    assert_eq!(event.header.unwrap().pack_id, header.pack_id);
    b.via(&channel).download(&header.pack_id).await.unwrap();

    // A half-written renewal is refused and logged; the last good
    // certificate is still served.
    replace(&cert, "-----BEGIN CERTIFICATE-----\nnot a certificate\n");
    hangup(&daemon);
    let log_has = || std::fs::read_to_string(&daemon.log).unwrap_or_default();
    for _ in 0..200 {
        if log_has().contains("still serving the previous one") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        log_has().contains("still serving the previous one"),
        "{}",
        log_has()
    );
    let still = until_served(&address, &ca, |_| true).await;
    assert_eq!(still, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue21_the_generated_certificate_is_renewed_by_the_same_ca() {
    // First start: the CA and a certificate for 825 days.
    let daemon = Daemon::start_sqlite(&[]).await;
    let tls = daemon.data.join("tls");
    let ca = daemon.ca.clone();
    let ca_before = std::fs::read(&ca).unwrap();
    let address = daemon.url.trim_start_matches("https://").to_string();
    let end = until_served(&address, &ca, |_| true).await;
    assert!(end > days_from_now(800), "{end}");

    // The certificate on disk nears its end (made here with the daemon's
    // own CA key, as if 800 days had passed); SIGHUP: renewed, same CA.
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca-key.pem")).unwrap()).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Baton local CA");
    dn.push(rcgen::DnType::OrganizationName, "batond");
    ca_params.distinguished_name = dn;
    let issuer = Issuer::new(ca_params, ca_key);
    let (near_cert, near_key) = leaf(&issuer, 10);
    let expire_soon = |near_cert: &str, near_key: &str| {
        replace(&tls.join("server-key.pem"), near_key);
        replace(&tls.join("server.pem"), near_cert);
    };
    expire_soon(&near_cert, &near_key);
    hangup(&daemon);
    until_served(&address, &ca, |end| end > days_from_now(800)).await;
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before, "the CA changed");

    // And at start: a daemon finding a certificate near its end renews it.
    let data = daemon.data.clone();
    let mut child = daemon.child;
    child.kill().await.unwrap();
    expire_soon(&near_cert, &near_key);
    let out = common::batond()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &address])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until_served(&address, &ca, |end| end > days_from_now(800)).await;
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before, "the CA changed");
    let renewed = std::fs::read_to_string(tls.join("server.pem")).unwrap();
    assert_ne!(renewed, near_cert);
    drop(out);
}

#[tokio::test]
async fn issue21_admin_help_lists_only_what_admin_commands_read() {
    let out = common::batond()
        .args(["admin", "school", "list", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--data-dir"), "{help}");
    for serve_only in [
        "--listen",
        "--tls-cert",
        "--max-pack-bytes",
        "--metrics-listen",
        "--http-listen",
        "--insecure-loopback",
    ] {
        assert!(!help.contains(serve_only), "{serve_only} in: {help}");
    }
    let out = common::batond()
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--metrics-listen", "--http-listen", "--tls-name"] {
        assert!(help.contains(flag), "{flag} missing: {help}");
    }
}
