//! Re-running `baton send` on a class already sent: packs whose files are
//! unchanged are recognised from their source stamps and not sealed again;
//! a file changed in place (even to the same size and modification time)
//! is noticed and its pack looked up by content as before.
use std::path::Path;

use crate::client_pilot::folder;
use crate::common::Daemon;
use crate::common::cli::{enrol, pupil};

/// `baton send --json --to 8614001 FOLDERS…`: each pack's (source, state,
/// unchanged).
async fn send(home: &crate::common::cli::Home, dirs: &[&Path]) -> Vec<(String, String, bool)> {
    let mut args = vec!["send", "--json", "--to", "8614001"];
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    args.extend(dirs.iter().map(String::as_str));
    // A pack not sent (a second one for a pupil) makes the exit status 1;
    // the JSON says what happened to each.
    let out = home.baton(&args).await;
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut packs: Vec<_> = value["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["source"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
                p["unchanged"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    packs.sort();
    packs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_a_rerun_skips_unchanged_packs_and_notices_changed_files() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let class = root.path().join("class");
    let dirs: Vec<_> = (1..=3)
        .map(|i| folder(&class, &format!("p{i}"), &pupil("Rerun", i)))
        .collect();
    let refs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();

    let first = send(&primary, &refs).await;
    assert!(first.iter().all(|(_, s, u)| s == "sent" && !u), "{first:?}");
    // Unchanged: recognised without sealing.
    let again = send(&primary, &refs).await;
    assert!(
        again.iter().all(|(_, s, u)| s == "already-sent" && *u),
        "{again:?}"
    );

    // Pupil 1's note rewritten with the same bytes: its change time moved,
    // so it is sealed again, found by content, and stamped anew.
    let note1 = dirs[0].join("note.txt");
    let same = std::fs::read(&note1).unwrap();
    std::fs::write(&note1, &same).unwrap();
    // Pupil 2's note changed to other bytes of the same length, its
    // modification time put back: still noticed (a second pack for the
    // pupil, which needs --again).
    let note2 = dirs[1].join("note.txt");
    let before = std::fs::metadata(&note2).unwrap().modified().unwrap();
    let mut other = std::fs::read(&note2).unwrap();
    other.reverse();
    std::fs::write(&note2, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&note2)
        .unwrap()
        .set_modified(before)
        .unwrap();
    let third = send(&primary, &refs).await;
    assert_eq!(third[0].1, "already-sent", "{third:?}");
    assert!(!third[0].2, "a touched file was trusted: {third:?}");
    assert_eq!(third[1].1, "not-sent", "{third:?}");
    assert!(!third[1].2, "{third:?}");
    assert!(third[2].2, "{third:?}");
    let fourth = send(&primary, &refs).await;
    assert!(
        fourth[0].2,
        "the re-sealed pack was not stamped: {fourth:?}"
    );
    assert_eq!(fourth[1].1, "not-sent", "{fourth:?}");
    // Nothing in the stamps names a pupil.
    for entry in std::fs::read_dir(primary.dir.join("outbox")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "stamp") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.len(), 64, "{text}");
            assert!(!text.contains("Rerun"));
        }
    }
}
