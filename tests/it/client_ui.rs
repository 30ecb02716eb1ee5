//! Issue 20, first part: `baton ui`, the local page. Who may use it (the
//! printed one-time link, a session cookie, the page's own `Host`, CSRF on
//! forms) and what it shows (the same data as the commands), with raw HTTP
//! for the refusals and headless Chromium for a real browser's visit.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::client_lifecycle::stderr;
use crate::common::cli::{Home, enrol, pupil, send_records};
use crate::common::{Daemon, browser_dom};

/// A running `baton ui`: its child, port and one-time link.
struct Ui {
    _child: tokio::process::Child,
    port: u16,
    link: String,
}

async fn ui(home: &Home) -> Ui {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .env("BATON_HOME", &home.dir)
        .args(["ui", "--no-open"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .unwrap()
    .unwrap();
    let link = line.trim().strip_prefix("open ").unwrap().to_string();
    let port = link
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    Ui {
        _child: child,
        port,
        link,
    }
}

/// One HTTP/1.1 request; the response's status, head and body.
async fn http(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn get(port: u16, path: &str, host: &str, cookie: Option<&str>) -> String {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{cookie}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn issue20_the_local_page_admits_only_its_link_and_shows_the_schools_data() {
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let record = pupil("Page", 1);
    let out = send_records(
        &primary,
        root.path(),
        "8614001",
        std::slice::from_ref(&record),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // Only on loopback.
    let out = secondary
        .baton(&["ui", "--no-open", "--listen", "0.0.0.0:0"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("this computer only"),
        "{}",
        stderr(&out)
    );

    let page = ui(&secondary).await;
    let port = page.port;
    let path_and_token = page
        .link
        .split_once(&format!(":{port}"))
        .unwrap()
        .1
        .to_string();
    // Nothing without the link's session; the link at another Host name
    // (DNS rebinding) is refused and not used up.
    assert_eq!(http(port, &get(port, "/", "127.0.0.1", None)).await.0, 401);
    assert_eq!(
        http(
            port,
            &get(port, "/inbox", "127.0.0.1", Some("baton_session=guess"))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http(port, &get(port, &path_and_token, "evil.example", None))
            .await
            .0,
        403
    );
    let (status, head, _) = http(port, &get(port, &path_and_token, "127.0.0.1", None)).await;
    assert_eq!(status, 303);
    assert!(
        head.contains("httponly") && head.contains("samesite=strict"),
        "{head}"
    );
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The link works once.
    assert_eq!(
        http(port, &get(port, &path_and_token, "127.0.0.1", None))
            .await
            .0,
        401
    );

    let (status, head, body) = http(port, &get(port, "/inbox", "127.0.0.1", Some(&cookie))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(
        body.contains("8612001") && body.contains("pupil record"),
        "{body}"
    );
    let (_, _, body) = http(port, &get(port, "/schools", "localhost", Some(&cookie))).await;
    assert!(
        body.contains("8614001") && body.contains("8612001"),
        "{body}"
    );

    // A form needs the session's CSRF token.
    let sheet = root.path().join("class.csv");
    std::fs::write(
        &sheet,
        format!(
            "{}\n{}\n",
            baton::csv::COLUMNS.join(","),
            "H801200001001,,Smith,Ann,,,2015-02-30,F,,,,,,,,,,,,,,,,,8612001,"
        ),
    )
    .unwrap();
    let form = |csrf: &str| {
        let body = format!(
            "csrf={csrf}&path={}",
            sheet.display().to_string().replace('/', "%2F")
        );
        format!(
            "POST /send/check HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(http(port, &form("forged")).await.0, 403);
    let (_, _, body) = http(port, &get(port, "/send", "127.0.0.1", Some(&cookie))).await;
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let (status, _, body) = http(port, &form(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("line 2"), "{body}");

    // A real browser: the sender's page, through its own link.
    let sender_page = ui(&primary).await;
    let sent_link = sender_page.link.replacen("/?token", "/sent?token", 1);
    if let Some(dom) = browser_dom(&sent_link).await {
        assert!(dom.contains(&record.upn), "{dom}");
        assert!(dom.contains("Records you sent"), "{dom}");
    }
}
