//! Issue 17 item 2: the leaving date travels signed in the pack header
//! (`baton send --left`), is shown by `sent` and `inbox`, and a date moved
//! on the server makes the pack refused.

use baton::api::v1;
use prost::Message as _;

use crate::common::cli::{enrol, pupil, send_records};
use crate::common::{Daemon, open_db};

#[tokio::test]
async fn issue17_the_leaving_date_is_signed_and_shown() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;

    // A bad date is refused before anything is sealed.
    let bad = primary
        .baton(&["send", "--to", "8614001", "--left", "22/07/2026", "x"])
        .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM-DD"));

    let dir = root.path().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::write(one.join("record.json"), pupil("Clock", 1).to_json()).unwrap();
    let out = primary
        .baton(&[
            "send",
            "--to",
            "8614001",
            "--left",
            "2026-07-22",
            one.to_str().unwrap(),
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without --left: today.
    assert!(
        send_records(&primary, &dir, "8614001", &[pupil("Clock", 2)])
            .await
            .status
            .success()
    );

    let sent = primary.json(&["sent", "--json"]).await;
    let lefts: Vec<&str> = sent.iter().map(|r| r["left"].as_str().unwrap()).collect();
    let today = time::OffsetDateTime::now_utc().date();
    assert!(lefts.contains(&"2026-07-22"), "{sent:?}");
    assert!(
        lefts.contains(&baton::pack::format_ymd(today).as_str()),
        "{sent:?}"
    );
    let inbox = secondary.json(&["inbox", "--json"]).await;
    assert!(inbox.iter().any(|r| r["left"] == "2026-07-22"), "{inbox:?}");

    // The server's owner moves the leaving date (making the pack look on
    // time): the signature no longer holds and the pack is not pulled.
    let db = open_db(&daemon.db_path()).await;
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, header FROM packs")
        .fetch_all(&db)
        .await
        .unwrap();
    let (seq, bytes) = rows
        .into_iter()
        .find(|(_, h)| v1::PackHeader::decode(h.as_slice()).unwrap().left_on == "2026-07-22")
        .unwrap();
    let mut header = v1::PackHeader::decode(bytes.as_slice()).unwrap();
    header.left_on = "2026-09-01".into();
    sqlx::query("UPDATE packs SET header = $1 WHERE seq = $2")
        .bind(header.encode_to_vec())
        .bind(seq)
        .execute(&db)
        .await
        .unwrap();
    let out_dir = root.path().join("in");
    let pulled = secondary
        .baton(&["pull", &header.pack_id, "--out", out_dir.to_str().unwrap()])
        .await;
    assert!(!pulled.status.success());
    let said = String::from_utf8_lossy(&pulled.stderr);
    assert!(said.contains("signature"), "{said}");
    assert!(!out_dir.join("8612001").join(pupil("Clock", 1).upn).exists());
}
