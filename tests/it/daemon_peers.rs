//! Issue 23 item 1, its first half: peering by descriptors. Two trusts'
//! operators export and add each other's signed descriptors with `batond
//! admin peer`; nothing is added unless the daemon key matches the
//! fingerprint read over the phone; an altered, foreign-signed or own
//! descriptor is refused naming what is wrong; the fingerprints both sides
//! print match; every change is audited.

use crate::client_lifecycle::stderr;
use crate::common::{Daemon, open_db};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fingerprint lines (`federation CA …`, `daemon key …`) of a message.
fn fingerprints(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("federation CA ") || l.starts_with("daemon key "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn issue23_operators_peer_by_descriptors() {
    let a = Daemon::start_sqlite(&[]).await;
    let b = Daemon::start_sqlite(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trust-a.json");
    let file_s = file.to_str().unwrap();

    let out = a
        .admin(&[
            "admin",
            "peer",
            "export",
            file_s,
            "--name",
            "trust-a",
            "--url",
            "https://fed.trust-a.example:50052",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = fingerprints(&stdout(&out));
    assert_eq!(exported.len(), 2, "{}", stdout(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for key in ["federation/key.pem", "federation/ca-key.pem"] {
            let mode = std::fs::metadata(a.data.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is owner-only");
        }
    }
    let descriptor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(descriptor["name"], "trust-a");
    assert!(!descriptor.to_string().contains("PRIVATE KEY"));

    // What A's operator reads out on the phone: the daemon key's fingerprint.
    let key_fingerprint = exported[1]
        .strip_prefix("daemon key")
        .unwrap()
        .trim()
        .to_string();
    let add = |path: &str, fingerprint: &str| {
        let args = ["admin", "peer", "add", path, "--fingerprint", fingerprint];
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let b = &b;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            b.admin(&args).await
        }
    };
    // A fingerprint that does not match (misheard, or another descriptor):
    // nothing is added.
    let out = add(file_s, "0000 0000 0000 0000 0000 0000 0000 0000").await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Nothing was added"),
        "{}",
        stderr(&out)
    );
    let out = b.admin(&["admin", "peer", "list"]).await;
    assert_eq!(stdout(&out).trim(), "no peers");

    // B adds it with the fingerprint heard (case and spaces do not matter)
    // and prints the same fingerprints A's operator read out.
    let out = add(file_s, &key_fingerprint.to_uppercase().replace(' ', "")).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fingerprints(&stdout(&out)), exported);
    let out = b.admin(&["admin", "peer", "list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "trust-a");
    assert_eq!(list[0]["url"], "https://fed.trust-a.example:50052");
    assert_eq!(list[0]["daemon_key"], descriptor["daemon_key"]);

    // Twice: refused, saying how to replace it.
    let out = add(file_s, &key_fingerprint).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already added"), "{}", stderr(&out));

    // Altered in transit (another address): the signature no longer holds.
    let mut altered = descriptor.clone();
    altered["url"] = "https://evil.example:50052".into();
    let altered_file = dir.path().join("altered.json");
    std::fs::write(&altered_file, altered.to_string()).unwrap();
    let out = add(altered_file.to_str().unwrap(), &key_fingerprint).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
    assert!(stderr(&out).contains("altered.json"), "{}", stderr(&out));

    // Not a descriptor, and a missing file: each named.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"name\": 1}").unwrap();
    for (path, says) in [
        (junk.to_str().unwrap(), "not a peer descriptor"),
        ("/nonexistent/peer.json", "/nonexistent/peer.json"),
    ] {
        let out = add(path, &key_fingerprint).await;
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }

    // A's own descriptor, added on A: refused.
    let out = a
        .admin(&[
            "admin",
            "peer",
            "add",
            file_s,
            "--fingerprint",
            &key_fingerprint,
        ])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("own descriptor"), "{}", stderr(&out));

    // A name an operator mistyped: refused before anything is written.
    let out = a
        .admin(&[
            "admin",
            "peer",
            "export",
            dir.path().join("bad.json").to_str().unwrap(),
            "--name",
            "Trust A",
            "--url",
            "https://fed.trust-a.example:50052",
        ])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("name"), "{}", stderr(&out));
    assert!(!dir.path().join("bad.json").exists());

    // Removed, once.
    let out = b.admin(&["admin", "peer", "remove", "trust-a"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = b.admin(&["admin", "peer", "remove", "trust-a"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no peer named"), "{}", stderr(&out));
    let out = b.admin(&["admin", "peer", "list"]).await;
    assert_eq!(stdout(&out).trim(), "no peers");

    // Audited: one entry each for the add and the remove, the chain whole.
    let pool = open_db(&b.db_path()).await;
    let actions: Vec<(String,)> =
        sqlx::query_as("SELECT action FROM audit WHERE action LIKE 'peer.%' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    let actions: Vec<&str> = actions.iter().map(|(a,)| a.as_str()).collect();
    assert_eq!(actions, ["peer.add", "peer.remove"]);
    let out = b.admin(&["admin", "audit", "verify"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}
