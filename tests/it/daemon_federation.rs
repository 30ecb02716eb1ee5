//! Issue 23, items 1 and 2: two trusts' daemons that added each other's
//! descriptors reach each other over mutual TLS on their federation
//! listeners (`batond serve --federation-listen`), and each one's schools
//! see the other's schools in `baton schools`, marked with the peer's name.
//! A daemon that is not a peer is refused at the handshake, a peer removed
//! is refused from then on, and a LAESTAB claimed twice is listed by no
//! peer and shown to the operators as a conflict.

use std::time::Duration;

use crate::client_lifecycle::stderr;
use crate::common::Daemon;
use crate::common::cli::{Home, enrol};

/// Flags of a daemon that federates, reading its peers' directories every
/// second.
pub(crate) const FEDERATING: &[&str] = &[
    "--federation-listen",
    "127.0.0.1:0",
    "--federation-sync-secs",
    "1",
];

pub(crate) fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exports `from`'s descriptor as `name` (its federation listener's URL)
/// and adds it on `to` with the daemon key fingerprint `export` printed.
pub async fn add_peer(from: &Daemon, name: &str, to: &Daemon) {
    add_peer_with(from, name, to, &[]).await;
}

/// [`add_peer`], passing `extra` to `peer add`.
pub async fn add_peer_with(from: &Daemon, name: &str, to: &Daemon, extra: &[&str]) {
    let url = from.printed("federation on ").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.json"));
    let file = file.to_str().unwrap();
    let args = ["admin", "peer", "export", file, "--name", name, "--url"];
    let out = from.admin(&[&args[..], &[url.as_str()]].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let fingerprint = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("daemon key"))
        .unwrap()
        .trim()
        .to_string();
    let add = ["admin", "peer", "add", file, "--fingerprint", &fingerprint];
    let out = to.admin(&[&add[..], extra].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Waits (up to 20 s) until `home`'s `baton schools --json` satisfies
/// `done`, and returns that listing.
pub(crate) async fn schools_until(
    home: &Home,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = home.json(&["schools", "--json"]).await;
        if done(&listed) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listed as expected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `batond admin peer check NAME` on `daemon` until it succeeds (or,
/// with `ok` false, fails), for up to 20 s, and returns that run.
pub(crate) async fn checked(daemon: &Daemon, name: &str, ok: bool) -> std::process::Output {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = daemon.admin(&["admin", "peer", "check", name]).await;
        if out.status.success() == ok {
            return out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer check {name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The peer named on `laestab`'s row, if it is listed.
pub(crate) fn peer_of<'a>(
    listed: &'a [serde_json::Value],
    laestab: &str,
) -> Option<&'a serde_json::Value> {
    listed
        .iter()
        .find(|s| s["laestab"] == laestab)
        .map(|s| &s["peer"])
}

#[tokio::test]
async fn issue23_peers_meet_over_mutual_tls_and_share_directories() {
    let a = Daemon::start_sqlite(FEDERATING).await;
    let b = Daemon::start_sqlite(FEDERATING).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&a, root.path(), "8614001", "primary", &["staff"]).await;
    let secondary = enrol(&b, root.path(), "9264002", "secondary", &["staff", "dsl"]).await;

    // Before peering: each daemon lists its own schools only, and a check
    // of a peer it does not know names the problem.
    let listed = primary.json(&["schools", "--json"]).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let out = a.admin(&["admin", "peer", "check", "trust-b"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no peer named"), "{}", stderr(&out));

    // B's agreement with A covers A's two local authorities.
    add_peer_with(&a, "trust-a", &b, &["--la", "861", "--la", "926"]).await;
    add_peer(&b, "trust-b", &a).await;
    let out = b.admin(&["admin", "peer", "list"]).await;
    assert!(
        stdout(&out).contains("authorities    861, 926"),
        "{}",
        stdout(&out)
    );
    let out = b
        .admin(&[
            "admin",
            "peer",
            "add",
            "/nonexistent",
            "--fingerprint",
            "00",
            "--la",
            "86",
        ])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("3 digits"), "{}", stderr(&out));

    // The operator's check: through mutual TLS, B's key as pinned, and B
    // knows A by the name A exported (once B's daemon has read its new
    // peer, within seconds).
    let out = checked(&a, "trust-b", true).await;
    let said = stdout(&out);
    assert!(said.contains("\"trust-a\""), "{said}");
    assert!(said.contains("1 school(s)"), "{said}");

    // A's school sees B's, marked as B's, with its keys to seal to; and
    // the other way round.
    let listed = schools_until(&primary, |l| peer_of(l, "9264002").is_some()).await;
    assert_eq!(peer_of(&listed, "9264002").unwrap(), "trust-b");
    assert_eq!(
        peer_of(&listed, "8614001").unwrap(),
        &serde_json::Value::Null
    );
    let row = listed.iter().find(|s| s["laestab"] == "9264002").unwrap();
    assert_eq!(row["keys"], 1);
    let listed = schools_until(&secondary, |l| peer_of(l, "8614001").is_some()).await;
    assert_eq!(peer_of(&listed, "8614001").unwrap(), "trust-a");

    // Pinned as a local school is (no directory key pinned: first sight),
    // and shown as another trust's.
    let shown = primary
        .json_value(&["schools", "show", "9264002", "--json"])
        .await;
    assert_eq!(shown["peer"], "trust-b");
    assert_eq!(shown["pin"], "not pinned before (pinned now)");
    let shown = primary
        .json_value(&["schools", "show", "9264002", "--json"])
        .await;
    assert_eq!(shown["pin"], "matches the pinned keys");

    // B's school enrols a second device: A's school is warned of the
    // change, as for a school of its own trust, until it confirms it.
    let code = crate::common::cli::code(&b, "9264002").await;
    let second = crate::common::cli::init(
        &b,
        &root.path().join("second"),
        "9264002",
        &code,
        &["staff"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let shown = primary
            .json_value(&["schools", "show", "9264002", "--json"])
            .await;
        if shown["pin"] == "CHANGED since pinned" {
            assert!(
                shown["changes"][0].as_str().unwrap().contains("new key"),
                "{shown}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    primary.ok(&["schools", "trust", "9264002"]).await;
    let shown = primary
        .json_value(&["schools", "show", "9264002", "--json"])
        .await;
    assert_eq!(shown["pin"], "matches the pinned keys", "{shown}");

    // B's school revokes that device's key (its DSL signs the revocation):
    // A's school sees the key revoked, checks the signed revocation itself,
    // and has nothing to confirm; B's schools still list one key to seal to.
    let second_key = second.json_value(&["keys", "export", "--json"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    secondary.ok(&["keys", "revoke", &second_key]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let shown = primary
            .json_value(&["schools", "show", "9264002", "--json"])
            .await;
        let revoked = shown["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == second_key.as_str() && k["active"] == false);
        if revoked {
            assert_eq!(shown["pin"], "matches the pinned keys", "{shown}");
            break;
        }
        assert_eq!(shown["pin"], "matches the pinned keys", "{shown}");
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = primary.json(&["schools", "--json"]).await;
    let row = listed.iter().find(|s| s["laestab"] == "9264002").unwrap();
    assert_eq!(row["keys"], 1, "{listed:?}");

    // `peer list` says when the directory was read, and how many schools.
    let out = a.admin(&["admin", "peer", "list", "--json"]).await;
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers[0]["schools"], 1, "{peers}");
    assert!(peers[0]["synced_at"].is_string(), "{peers}");
    assert_eq!(peers[0]["conflicts"], serde_json::json!([]));
    // A school B enrolled whose code is not redeemed yet has no key: B does
    // not list it, so A's operator is not told of a problem.
    let out = b
        .admin(&[
            "admin", "school", "add", "9264005", "--name", "New", "--phase", "primary",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let added = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = a.admin(&["admin", "peer", "list", "--json"]).await;
        let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let read_at = peers[0]["synced_at"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        if read_at > added {
            assert_eq!(peers[0]["schools"], 1, "{peers}");
            assert!(peers[0]["sync_error"].is_null(), "{peers}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{peers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A LAESTAB both trusts claim (A enrols B's school by mistake): A's
    // schools see A's own, and both operators see the conflict.
    enrol(&a, root.path(), "9264002", "secondary", &["staff"]).await;
    let listed = schools_until(&primary, |l| {
        l.iter().filter(|s| s["laestab"] == "9264002").count() == 1
            && peer_of(l, "9264002") == Some(&serde_json::Value::Null)
    })
    .await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let out = a.admin(&["admin", "peer", "list"]).await;
    let said = stdout(&out);
    assert!(
        said.contains("CONFLICT       9264002 is claimed by this daemon and trust-b"),
        "{said}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = b.admin(&["admin", "peer", "list"]).await;
        if stdout(&out).contains("CONFLICT       9264002 is claimed by this daemon and trust-a") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", stdout(&out));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A third daemon that added A's descriptor, but that A never added, is
    // refused at A's handshake.
    let c = Daemon::start_sqlite(FEDERATING).await;
    add_peer(&a, "trust-a", &c).await;
    let out = c.admin(&["admin", "peer", "check", "trust-a"]).await;
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("peer trust-a at https://"), "{error}");
    assert!(
        error.contains("has its operator added this daemon's descriptor?"),
        "{error}"
    );
    let peers = c.admin(&["admin", "peer", "list", "--json"]).await;
    let peers: serde_json::Value = serde_json::from_slice(&peers.stdout).unwrap();
    assert_eq!(peers[0]["schools"], 0, "C read nothing of A's: {peers}");

    // Nor does a caller without a certificate get an answer, even one
    // that trusts A's federation CA.
    let url = a.printed("federation on ").await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(a.data.join("federation/ca.pem")).unwrap(),
        ))
        .domain_name("batond-federation");
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .tls_config(tls)?
            .connect()
            .await?;
        let mut client = baton::api::v1::federation_client::FederationClient::new(channel);
        client
            .peer_schools(baton::api::v1::PeerSchoolsRequest {})
            .await
            .map_err(Box::<dyn std::error::Error>::from)
    }
    .await;
    assert!(refused.is_err(), "answered a caller with no certificate");

    // B stops trusting A: A is refused from then on (no restart of B).
    let out = b.admin(&["admin", "peer", "remove", "trust-a"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    checked(&a, "trust-b", false).await;
    // B's schools no longer see A's.
    schools_until(&secondary, |l| peer_of(l, "8614001").is_none()).await;
}

/// Waits (up to 60 s) until `home`'s `baton ARGS --json` listing
/// satisfies `done`, and returns it.
pub(crate) async fn listed_until(
    home: &Home,
    args: &[&str],
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listed = home.json(args).await;
        if done(&listed) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "baton {args:?} never as expected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Audit actions of `daemon` starting `prefix`, in order (SQLite).
pub(crate) async fn audited(daemon: &Daemon, prefix: &str) -> Vec<(String, String)> {
    let pool = crate::common::open_db(&daemon.db_path()).await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, action FROM audit WHERE action LIKE $1 ORDER BY seq")
            .bind(format!("{prefix}%"))
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

/// Two trusts peered both ways, each with one school; returns the daemons
/// once A's school sees B's.
pub(crate) async fn two_trusts(root: &std::path::Path) -> (Daemon, Daemon, Home, Home) {
    two_trusts_with(root, &[]).await
}

/// [`two_trusts`], passing `extra` to A's daemon.
pub(crate) async fn two_trusts_with(
    root: &std::path::Path,
    extra: &[&str],
) -> (Daemon, Daemon, Home, Home) {
    let a = Daemon::start_sqlite(&[FEDERATING, extra].concat()).await;
    let b = Daemon::start_sqlite(FEDERATING).await;
    let primary = enrol(&a, root, "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&b, root, "9264002", "secondary", &["staff", "dsl"]).await;
    add_peer(&a, "trust-a", &b).await;
    add_peer(&b, "trust-b", &a).await;
    schools_until(&primary, |l| peer_of(l, "9264002").is_some()).await;
    schools_until(&secondary, |l| peer_of(l, "8612001").is_some()).await;
    (a, b, primary, secondary)
}

/// Pulls and acknowledges everything in `home`'s inbox; checks each pack
/// verified as from `from`.
pub(crate) async fn pull_and_ack(home: &Home, out: &std::path::Path, from: &str, count: usize) {
    home.ok(&["pull", "--all", "--out", out.to_str().unwrap()])
        .await;
    let pulled: Vec<_> = std::fs::read_dir(out.join(from))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(pulled.len(), count);
    for dir in &pulled {
        let pack: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("pack.json")).unwrap()).unwrap();
        assert_eq!(pack["verified"], true, "{pack}");
        assert_eq!(pack["from"], from);
    }
    home.ok(&["ack", "--all-pulled"]).await;
}
