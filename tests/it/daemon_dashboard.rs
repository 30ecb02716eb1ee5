//! The trust dashboard (`--http-listen`): HTTPS with the daemon's
//! certificate; nothing without a one-time link from `batond admin
//! dashboard link`; then the overview, schools, deliveries, overdue list
//! and audit log after a journey, over raw HTTPS and in headless Chromium.
use baton::api::v1;
use common::web::get;
use common::{Daemon, ciphertext};

use crate::common;

/// `batond admin dashboard link --json`: the URL.
async fn new_link(daemon: &Daemon) -> String {
    let out = daemon
        .admin(&["admin", "dashboard", "link", "--json"])
        .await;
    assert!(out.status.success(), "{out:?}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(value["expires_at"].is_string(), "{value}");
    value["url"].as_str().unwrap().to_string()
}

/// The path and query of a link on `address`.
fn path_of(link: &str, address: &str) -> String {
    link.split_once(address)
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| panic!("{link} is not on {address}"))
}

/// A daemon with a dashboard, two schools, three packs from the primary to
/// the secondary (one acknowledged) and one overdue by its leaving date.
async fn journey() -> (Daemon, String, Vec<v1::PackHeader>) {
    let daemon = Daemon::start_sqlite(&["--http-listen", "127.0.0.1:0"]).await;
    let url = daemon.printed("dashboard on https://").await;
    let address = url.trim_end_matches('/').to_string();
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let keys = a.keys_of(&b.laestab).await;
    let mut headers = Vec::new();
    for _ in 0..3 {
        let data = ciphertext(5000);
        // Left 2026-07-22: due 15 school days later, long past.
        let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        a.upload(&header, &data, 8192).await.unwrap();
        headers.push(header);
    }
    b.download(&headers[0].pack_id).await.unwrap();
    b.exchange()
        .acknowledge(b.req(v1::AcknowledgeRequest {
            receipt: Some(b.receipt(&headers[0])),
        }))
        .await
        .unwrap();
    (daemon, address, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue21_the_dashboard_admits_only_its_link_and_shows_the_trust() {
    let (daemon, address, headers) = journey().await;
    let ca = daemon.ca.clone();

    // Without a session: 401 and how to get in, on every page.
    for path in [
        "/",
        "/schools",
        "/deliveries",
        "/overdue",
        "/audit",
        "/style.css",
    ] {
        let answer = get(&address, &ca, path, None).await;
        assert_eq!(answer.status, 401, "{path}: {}", answer.head);
        assert!(
            answer.body.contains("batond admin dashboard link"),
            "{path}"
        );
    }
    // A made-up token is refused too.
    let answer = get(
        &address,
        &ca,
        &format!("/signin?t={}", "ab".repeat(32)),
        None,
    )
    .await;
    assert_eq!(answer.status, 401);

    // The link works once and becomes a strict session cookie.
    let link = new_link(&daemon).await;
    let path = path_of(&link, &address);
    let answer = get(&address, &ca, &path, None).await;
    assert_eq!(answer.status, 303, "{}", answer.head);
    let cookie_line = answer
        .head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap()
        .to_string();
    for attribute in ["httponly", "secure", "samesite=strict"] {
        assert!(cookie_line.contains(attribute), "{cookie_line}");
    }
    let cookie = cookie_line
        .trim_start_matches("set-cookie:")
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(get(&address, &ca, &path, None).await.status, 401, "reused");

    let page = |p: &'static str| {
        let (address, ca, cookie) = (address.clone(), ca.clone(), cookie.clone());
        async move {
            let answer = get(&address, &ca, p, Some(&cookie)).await;
            assert_eq!(answer.status, 200, "{p}: {}", answer.head);
            assert!(
                answer
                    .head
                    .contains("content-security-policy: default-src 'none'"),
                "{p}: {}",
                answer.head
            );
            answer.body
        }
    };
    let overview = page("/").await;
    assert!(overview.contains("id=\"schools-count\">2<"), "{overview}");
    assert!(overview.contains("id=\"packs-count\">3<"), "{overview}");
    assert!(
        overview.contains("data-state=\"acknowledged\">1<"),
        "{overview}"
    );
    assert!(overview.contains("data-state=\"pending\">2<"), "{overview}");
    assert!(
        overview.contains("id=\"overdue-count\"><a href=\"/overdue\">2<"),
        "{overview}"
    );
    assert!(overview.contains("30 days after"), "{overview}");
    let schools = page("/schools").await;
    assert!(
        schools.contains("8612001") && schools.contains("8614001"),
        "{schools}"
    );
    let deliveries = page("/deliveries").await;
    // Sent 3, pending 2, downloaded 0, acknowledged 1, overdue 2; on time
    // 1 of the 3 judged (the test's receipt is dated before the due date).
    assert!(
        deliveries.contains(
            "<td class=\"n\">3</td><td class=\"n\">2</td><td class=\"n\">0</td><td class=\"n\">1</td>"
        ),
        "{deliveries}"
    );
    assert!(
        deliveries.contains("<td class=\"n late\">2</td><td class=\"n\">33%</td>"),
        "{deliveries}"
    );
    let overdue = page("/overdue").await;
    assert!(overdue.contains(&headers[1].pack_id), "{overdue}");
    assert!(overdue.contains(&headers[2].pack_id), "{overdue}");
    assert!(
        !overdue.contains(&headers[0].pack_id),
        "acknowledged is not overdue"
    );
    let audit = page("/audit").await;
    for action in [
        "dashboard.link",
        "dashboard.signin",
        "pack.upload",
        "pack.acknowledge",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    let token = path.rsplit('=').next().unwrap();
    for body in [&overview, &schools, &deliveries, &overdue, &audit] {
        assert!(!body.contains(token), "a page shows the link's token");
    }
    // A guesser is slowed down: after 10 failures a minute (2 above, 8
    // here), 429 even for a good link (the store is not asked).
    for _ in 0..8 {
        let bad = get(&address, &ca, "/signin?t=nothex", None).await;
        assert_eq!(bad.status, 401);
    }
    let fresh = path_of(&new_link(&daemon).await, &address);
    assert_eq!(get(&address, &ca, &fresh, None).await.status, 429);

    // Signing out ends the session.
    let out = get(&address, &ca, "/signout", Some(&cookie)).await;
    assert_eq!(out.status, 200);
    assert_eq!(get(&address, &ca, "/", Some(&cookie)).await.status, 401);

    // The daemon's log holds no token.
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(!log.contains(token));
}

#[tokio::test]
async fn issue21_dashboard_links_need_a_dashboard_and_tls() {
    // No dashboard served: the link command says how to get one.
    let daemon = Daemon::start_sqlite(&[]).await;
    let out = daemon.admin(&["admin", "dashboard", "link"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http-listen"), "{err}");
    // ... unless the operator names the address.
    let out = daemon
        .admin(&[
            "admin",
            "dashboard",
            "link",
            "--url",
            "https://baton.trust.example:8443",
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("https://baton.trust.example:8443/signin?t="),
        "{text}"
    );
    // Plaintext gRPC and a dashboard do not mix.
    let dir = tempfile::tempdir().unwrap();
    let out = common::batond()
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure-loopback",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("drop --insecure-loopback"));
}

/// The dashboard in a real browser after the journey: each page opened
/// from the navigation, looked at (screenshots to `BATON_UI_SCREENSHOTS`
/// when set), the skip link first on Tab, and nothing once signed out.
const JOURNEY: &str = r#"
import sys
import time
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.chrome.service import Service

link, shots, overdue_pack = sys.argv[1:4]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
            "--ignore-certificate-errors"]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)

def wait_for(text):
    for _ in range(200):
        if text in driver.page_source:
            return
        time.sleep(0.1)
    raise AssertionError("never showed " + repr(text) + ": " + driver.page_source)
try:
    driver.get(link)
    wait_for("At a glance")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "Skip to the content"
    driver.execute_script("document.activeElement.blur()")
    assert driver.find_element(By.ID, "overdue-count").text == "2"
    driver.save_screenshot(shots + "/dashboard-overview.png")
    for name, text, shot in [("Schools", "8614001", "schools"),
                             ("Deliveries", "Deliveries between schools", "deliveries"),
                             ("Overdue", overdue_pack, "overdue"),
                             ("Audit log", "dashboard.signin", "audit")]:
        driver.find_element(By.LINK_TEXT, name).click()
        wait_for(text)
        driver.save_screenshot(shots + "/dashboard-" + shot + ".png")
    driver.find_element(By.LINK_TEXT, "Sign out").click()
    wait_for("Signed out")
    driver.get(link.split("/signin")[0] + "/")
    wait_for("batond admin dashboard link")
    print("JOURNEY OK")
finally:
    driver.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue21_the_dashboard_in_a_browser() {
    if !common::webdriver_ready() {
        return;
    }
    let (daemon, _, headers) = journey().await;
    let link = new_link(&daemon).await;
    let root = tempfile::tempdir().unwrap();
    let shots = common::screenshot_dir(root.path());
    let script = root.path().join("dashboard.py");
    std::fs::write(&script, JOURNEY).unwrap();
    common::run_journey(
        &script,
        &[
            link.as_ref(),
            shots.as_os_str(),
            headers[1].pack_id.as_ref(),
        ],
    )
    .await;
}
