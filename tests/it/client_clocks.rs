//! Issue 17 item 2: the leaving date travels signed in the pack header
//! (`baton send --left`), is shown by `sent` and `inbox`, and a date moved
//! on the server makes the pack refused.

use baton::api::v1;
use prost::Message as _;

use crate::common::cli::{Home, enrol, pupil, send_records};

/// Sends `record`'s pack folder (under `root`) to 8614001 as `kind`, left
/// on `left`; expects success.
async fn send_left(
    home: &Home,
    root: &std::path::Path,
    record: &baton::record::TransitionRecord,
    left: &str,
    kind: &str,
) {
    let dir = root.join(format!("left-{}", record.upn));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), record.to_json()).unwrap();
    let dir = dir.display().to_string();
    let out = home
        .baton(&[
            "send", "--to", "8614001", "--kind", kind, "--left", left, &dir,
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
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
    send_left(&primary, &dir, &pupil("Clock", 1), "2026-07-22", "transfer").await;
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
        lefts.contains(&baton::dates::format_ymd(today).as_str()),
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

/// Issue 17 items 3 and 4: due dates from the leaving date; overdue packs
/// in `sent` (and `sent --overdue`, exactly those) and first in `inbox`; a
/// receipt after the due date is late, one before it on time; with a
/// calendar, the daemon counts on it.
async fn issue17_overdue_packs_and_receipts_on_time(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(
        &daemon,
        root.path(),
        "8612001",
        "primary",
        &["dsl", "staff"],
    )
    .await;
    let secondary = enrol(
        &daemon,
        root.path(),
        "8614001",
        "secondary",
        &["dsl", "staff"],
    )
    .await;
    let today = time::OffsetDateTime::now_utc().date();
    let ymd = |d: time::Date| baton::dates::format_ymd(d);
    let long_ago = ymd(today - time::Duration::days(60));
    let r = root.path();
    send_left(&primary, r, &pupil("Due", 1), &long_ago, "transfer").await;
    send_left(&primary, r, &pupil("Due", 2), &ymd(today), "transfer").await;
    send_left(&primary, r, &pupil("Due", 3), &ymd(today), "safeguarding").await;

    let sent = primary.json(&["sent", "--json"]).await;
    let by = |rows: &[serde_json::Value], serial: u32| {
        let upn = pupil("Due", serial).upn;
        rows.iter()
            .find(|r| r["upn"] == upn.as_str())
            .unwrap()
            .clone()
    };
    let one = by(&sent, 1);
    assert_eq!(one["overdue"], true, "{one}");
    assert_eq!(one["on_time"], serde_json::Value::Null, "{one}");
    let due_one = baton::dates::parse_ymd(one["due"].as_str().unwrap()).unwrap();
    assert!(
        due_one > today - time::Duration::days(60) && due_one < today,
        "{one}"
    );
    assert_eq!(by(&sent, 2)["overdue"], false);
    // The CP file is due sooner than the transfer pack of the same day.
    let due = |r: serde_json::Value| baton::dates::parse_ymd(r["due"].as_str().unwrap()).unwrap();
    assert!(due(by(&sent, 3)) < due(by(&sent, 2)));
    let overdue = primary.json(&["sent", "--json", "--overdue"]).await;
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(overdue[0]["upn"], pupil("Due", 1).upn.as_str());
    let table = primary.baton(&["sent"]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("OVERDUE"));
    assert!(String::from_utf8_lossy(&table.stderr).contains("1 pack overdue (oldest due"));
    assert!(String::from_utf8_lossy(&table.stderr).contains("the trust has no calendar"));

    // The receiver sees what is overdue first.
    let inbox = secondary.json(&["inbox", "--json"]).await;
    assert_eq!(inbox[0]["overdue"], true, "{inbox:?}");
    assert_eq!(inbox[0]["left"], long_ago.as_str());

    // The hub's report, before the receipts.
    let report = report(&daemon).await;
    let transfer = pair(&report, "transfer");
    assert_eq!(
        (transfer["sent"].as_u64(), transfer["overdue"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(transfer["acknowledged"], 0);

    // Acknowledged now: the old one late, the others on time.
    let out_dir = root.path().join("in");
    secondary
        .ok(&["pull", "--all", "--out", out_dir.to_str().unwrap()])
        .await;
    secondary.ok(&["ack", "--all-pulled"]).await;
    let sent = primary.json(&["sent", "--json"]).await;
    assert_eq!(by(&sent, 1)["on_time"], false, "{sent:?}");
    assert_eq!(by(&sent, 1)["overdue"], false);
    assert_eq!(by(&sent, 2)["on_time"], true);
    assert_eq!(by(&sent, 3)["on_time"], true);
    let report = self::report(&daemon).await;
    let transfer = pair(&report, "transfer");
    assert_eq!(transfer["acknowledged"], 2, "{report}");
    assert_eq!(transfer["on_time"], 1, "{report}");
    assert_eq!(transfer["overdue"], 0, "{report}");
    assert!(
        transfer["median_school_days"].as_f64().unwrap() > 10.0,
        "{report}"
    );
    let cp = pair(&report, "safeguarding");
    assert_eq!(
        (cp["sent"].as_u64(), cp["on_time"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(report["totals"]["sent"], 3);
    assert_eq!(transfer["from_name"], "School");
    let csv = daemon.admin(&["admin", "report", "--csv"]).await;
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert!(
        csv.starts_with("from,to,kind,sent,acknowledged,on_time,overdue,median_school_days\n"),
        "{csv}"
    );
    assert!(csv.contains("8612001,8614001,transfer,2,2,1,0,"), "{csv}");
    // The printable page names the schools and no pupil.
    let page = root.path().join("report.html");
    let out = daemon
        .admin(&["admin", "report", "--html", page.to_str().unwrap()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("Transfers between schools") && html.contains("8614001"),
        "{html}"
    );
    assert!(html.contains("<td class=\"n\">3</td>"), "{html}");
    for serial in 1..=3 {
        let p = pupil("Due", serial);
        assert!(!html.contains(&p.upn) && !html.contains(&p.surname));
    }
    // As a browser shows it: the table with the schools and the totals.
    if let Some(text) = crate::common::browser_dom(&format!("file://{}", page.display())).await {
        assert!(text.contains("Transfers between schools"), "{text}");
        assert!(text.contains("All schools"), "{text}");
        assert!(text.contains("School <small>8612001</small>"), "{text}");
    }
    // A period before any pack: nothing.
    let out = daemon
        .admin(&["admin", "report", "--json", "--until", "2020-01-01"])
        .await;
    let empty: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(empty["totals"]["sent"], 0, "{empty}");

    // A calendar whose last term ended yesterday: the old pack's due date
    // is counted on it, today's are past its end and so unknown.
    let calendar = format!(
        "name = \"test\"\n[[term]]\nstart = \"{}\"\nend = \"{}\"\n",
        ymd(today - time::Duration::days(120)),
        ymd(today - time::Duration::days(1)),
    );
    let file = root.path().join("cal.toml");
    std::fs::write(&file, calendar).unwrap();
    let out = daemon
        .admin(&["admin", "calendar", "import", file.to_str().unwrap()])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = primary.json(&["sent", "--json"]).await;
    assert!(by(&sent, 1)["due"].is_string(), "{sent:?}");
    assert_eq!(by(&sent, 2)["due"], serde_json::Value::Null, "{sent:?}");
    let table = primary.baton(&["sent"]).await;
    assert!(!String::from_utf8_lossy(&table.stderr).contains("the trust has no calendar"));
}

async fn report(daemon: &Daemon) -> serde_json::Value {
    let out = daemon.admin(&["admin", "report", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pair(report: &serde_json::Value, kind: &str) -> serde_json::Value {
    report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == kind && p["from"] == "8612001" && p["to"] == "8614001")
        .unwrap_or_else(|| panic!("no {kind} pair in {report}"))
        .clone()
}

on_both_backends!(issue17_overdue_packs_and_receipts_on_time);

/// Issue 17 item 2: a spreadsheet's `left` column dates each row; a bad
/// date names the line and column, and the others still go with
/// `--skip-invalid`.
#[tokio::test]
async fn issue17_a_spreadsheet_dates_each_leaver() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let (a, b) = (pupil("Sheet", 1), pupil("Sheet", 2));
    let csv = format!(
        "upn,surname,forename,dob,sex,destination,left\n{},{},{},{},{},8614001,2026-07-22\n{},{},{},{},{},8614001,22/07/2026\n",
        a.upn, a.surname, a.forename, a.dob, a.sex, b.upn, b.surname, b.forename, b.dob, b.sex
    );
    let file = root.path().join("class.csv");
    std::fs::write(&file, csv).unwrap();
    let out = primary
        .baton(&["send", "--csv", file.to_str().unwrap(), "--skip-invalid"])
        .await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("line 3") && said.contains("left"), "{said}");
    assert!(said.contains("22/07/2026"), "{said}");
    let sent = primary.json(&["sent", "--json"]).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["left"], "2026-07-22");
}

/// Issue 17 item 5: the daemon logs a pack that has become overdue (once),
/// naming the pack, the schools and the due date, and nothing about the pupil.
#[tokio::test]
async fn issue17_the_daemon_logs_overdue_packs() {
    let mut daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let _secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let late = pupil("Overdue", 1);
    let left =
        baton::dates::format_ymd(time::OffsetDateTime::now_utc().date() - time::Duration::days(60));
    send_left(&primary, root.path(), &late, &left, "transfer").await;
    let sent = primary.json(&["sent", "--json"]).await;
    let id = sent[0]["id"].as_str().unwrap().to_string();

    // The daemon looks when it starts.
    daemon.kill9().await;
    daemon.restart(&[]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&daemon.log).unwrap();
        if log.contains("pack overdue") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no overdue line in the log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let line = log.lines().find(|l| l.contains("pack overdue")).unwrap();
    assert!(
        line.contains(&id) && line.contains("8612001") && line.contains("8614001"),
        "{line}"
    );
    assert!(line.contains("due="), "{line}");
    assert!(!log.contains(&late.upn) && !log.contains(&late.surname));
}
