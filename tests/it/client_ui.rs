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

/// `home`'s page at `path`, signed in through a fresh `baton ui`'s link.
pub(crate) async fn signed_in_page(home: &Home, path: &str) -> String {
    let page = ui(home).await;
    let port = page.port;
    let link = page.link.split_once(&format!(":{port}")).unwrap().1;
    let (status, head, _) = http(port, &get(port, link, "127.0.0.1", None)).await;
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let (status, _, body) = http(port, &get(port, path, "127.0.0.1", Some(&cookie))).await;
    assert_eq!(status, 200, "{body}");
    body
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

    // The receipts file, and a school's keys with the confirm step: a new
    // device of the primary is a change the page shows and confirms.
    let (status, head, body) = http(
        port,
        &get(port, "/sent/receipts.csv", "127.0.0.1", Some(&cookie)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("attachment; filename=\"receipts.csv\""),
        "{head}"
    );
    assert!(body.starts_with("pack_id,"), "{body}");
    let (_, _, body) = http(
        port,
        &get(port, "/schools/8612001", "127.0.0.1", Some(&cookie)),
    )
    .await;
    assert!(
        body.contains(&crate::common::cli::grouped(&primary.key_id())),
        "{body}"
    );
    assert!(!body.contains("have changed"), "{body}");
    let laptop = crate::common::cli::init(
        &daemon,
        &root.path().join("laptop"),
        "8612001",
        &crate::common::cli::code(&daemon, "8612001").await,
        &["staff"],
    )
    .await;
    let (_, _, body) = http(
        port,
        &get(port, "/schools/8612001", "127.0.0.1", Some(&cookie)),
    )
    .await;
    assert!(body.contains("have changed"), "{body}");
    assert!(
        body.contains(&crate::common::cli::grouped(&laptop.key_id())),
        "{body}"
    );
    let trust = |csrf: &str| {
        let body = format!("csrf={csrf}&laestab=8612001");
        format!(
            "POST /schools/trust HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(http(port, &trust("forged")).await.0, 403);
    let (status, _, body) = http(port, &trust(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("now trusts"), "{body}");
    assert!(!body.contains("have changed"), "{body}");
    let (_, _, body) = http(port, &get(port, "/", "127.0.0.1", Some(&cookie))).await;
    assert!(!body.contains("have changed"), "{body}");

    // A real browser: the sender's page, through its own link.
    let sender_page = ui(&primary).await;
    let sent_link = sender_page.link.replacen("/?token", "/sent?token", 1);
    if let Some(dom) = browser_dom(&sent_link).await {
        assert!(dom.contains(&record.upn), "{dom}");
        assert!(dom.contains("Records you sent"), "{dom}");
    }
}

/// The WebDriver journeys, in Python with Debian's `python3-selenium` and
/// `chromium-driver`: argv = journey, link, a path, a second path, the
/// screenshot folder. Each prints "JOURNEY OK" when every step held.
const JOURNEY: &str = r#"
import sys
import time
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.chrome.service import Service

journey, link, first, second, shots = sys.argv[1:6]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
page = lambda: driver.page_source

def wait_for(text):
    # A click that submits a form returns before the next page is drawn.
    for _ in range(200):
        if text in driver.page_source:
            return
        time.sleep(0.1)
    raise AssertionError("never showed " + repr(text) + ": " + driver.page_source)
try:
    driver.get(link)
    if journey == "send":
        driver.save_screenshot(shots + "/home.png")
        # Keyboard first: the first Tab reaches the skip link.
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert driver.switch_to.active_element.text == "Skip to the page"
        driver.execute_script("document.activeElement.blur()")
        driver.find_element(By.LINK_TEXT, "Send").click()
        wait_for("Send records")
        field = driver.find_element(By.ID, "path")
        assert driver.find_element(By.CSS_SELECTOR, "label[for=path]").text.startswith("CTF file")
        # A spreadsheet with a bad date: named by line and column.
        field.send_keys(second)
        driver.find_element(By.XPATH, "//button[text()='Check']").click()
        wait_for("line 2, column dob")
        driver.save_screenshot(shots + "/check.png")
        # The class's CTF: checked, then sent.
        field = driver.find_element(By.ID, "path")
        field.clear()
        field.send_keys(first)
        driver.find_element(By.XPATH, "//button[text()='Check']").click()
        wait_for("2 pupil(s) ready to send")
        driver.find_element(By.XPATH, "//button[text()='Send']").click()
        wait_for("Sent 2,")
        driver.save_screenshot(shots + "/send.png")
    elif journey == "collect":
        driver.find_element(By.LINK_TEXT, "Received").click()
        wait_for("Records waiting for you")
        assert "8612001" in driver.find_element(By.TAG_NAME, "table").text
        driver.save_screenshot(shots + "/received.png")
        def collect(tick):
            if tick:
                driver.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
            out = driver.find_element(By.ID, "out")
            out.clear()
            out.send_keys(first)
            ctf = driver.find_element(By.ID, "ctf")
            ctf.clear()
            ctf.send_keys(second)
            driver.find_element(By.XPATH, "//button[text()='Collect and confirm receipt']").click()
            wait_for("1 record(s) collected")
            wait_for("Receipt confirmed to the sending school for 1 record")
        # One ticked, then the rest (none ticked: everything).
        collect(True)
        driver.find_element(By.LINK_TEXT, "Received").click()
        wait_for("Records waiting for you")
        collect(False)
        driver.save_screenshot(shots + "/collected.png")
        driver.find_element(By.LINK_TEXT, "Schools").click()
        wait_for("Schools in your trust's directory")
        wait_for("Served by")
        wait_for("your trust")
        driver.save_screenshot(shots + "/schools.png")
        driver.find_element(By.LINK_TEXT, "8612001").click()
        wait_for("Read the fingerprint in groups of four")
        assert "matches" in page(), page()
        driver.save_screenshot(shots + "/school.png")
    elif journey == "receipts":
        driver.find_element(By.LINK_TEXT, "Sent").click()
        wait_for("Records you sent")
        assert page().count("receipt confirmed") == 2, page()
        driver.save_screenshot(shots + "/sent.png")
        # 200 % zoom: still readable, nothing cut off.
        driver.execute_script("document.body.style.zoom='200%'")
        driver.save_screenshot(shots + "/sent-200.png")
    print("JOURNEY OK")
finally:
    driver.quit()
"#;

/// Runs one WebDriver journey against `link`.
async fn journey(script: &std::path::Path, name: &str, link: &str, args: [&std::path::Path; 3]) {
    let [a, b, c] = args;
    crate::common::run_journey(
        script,
        &[
            name.as_ref(),
            link.as_ref(),
            a.as_os_str(),
            b.as_os_str(),
            c.as_os_str(),
        ],
    )
    .await;
}

/// A real browser, driven: a primary's teacher checks a spreadsheet (its
/// problem named by line and column) and sends a class from a CTF through
/// the page; the secondary collects it and confirms receipt through its
/// page; the primary sees both receipts confirmed. Keyboard and zoom too.
/// Screenshots go to `BATON_UI_SCREENSHOTS` when set (docs/ui/ holds the
/// last ones looked at), else a temporary folder.
#[tokio::test]
async fn issue20_a_browser_sends_collects_and_confirms_through_the_pages() {
    if !crate::common::webdriver_ready() {
        return;
    }
    let daemon = Daemon::start_sqlite(&[]).await;
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(&daemon, root.path(), "8612001", "primary", &["staff"]).await;
    let secondary = enrol(&daemon, root.path(), "8614001", "secondary", &["staff"]).await;
    let class: Vec<String> = [pupil("Walk", 1), pupil("Walk", 2)]
        .iter()
        .map(baton::ctf::pupil_xml_from_record)
        .collect();
    let ctf = root.path().join("8612001_CTF_8614001_001.xml");
    std::fs::write(&ctf, crate::client_pilot::ctf_from("8612001", class)).unwrap();
    let sheet = root.path().join("class.csv");
    std::fs::write(
        &sheet,
        format!(
            "{}\nH801200001001,,Smith,Ann,,,2015-02-30,F,,,,,,,,,,,,,,,,,8614001,\n",
            baton::csv::COLUMNS.join(",")
        ),
    )
    .unwrap();
    let shots = crate::common::screenshot_dir(root.path());
    let script = root.path().join("journey.py");
    std::fs::write(&script, JOURNEY).unwrap();

    let page = ui(&primary).await;
    journey(&script, "send", &page.link, [&ctf, &sheet, &shots]).await;
    let received = root.path().join("received");
    let mis = root.path().join("for-mis");
    let page = ui(&secondary).await;
    journey(&script, "collect", &page.link, [&received, &mis, &shots]).await;
    assert_eq!(
        std::fs::read_dir(received.join("8612001")).unwrap().count(),
        2
    );
    // One CTF for the MIS per collection from the sending school.
    assert_eq!(std::fs::read_dir(&mis).unwrap().count(), 2);
    let page = ui(&primary).await;
    journey(&script, "receipts", &page.link, [&ctf, &sheet, &shots]).await;
    for shot in [
        "home",
        "check",
        "send",
        "received",
        "collected",
        "schools",
        "sent",
        "sent-200",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "no {shot}.png");
    }
}
