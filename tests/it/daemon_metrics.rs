//! Prometheus metrics (`--metrics-listen`): after a journey, the gRPC
//! counters under go-grpc-prometheus' names count exactly what happened
//! (calls by method and code, messages both ways, streaming included),
//! Baton's own gauges count packs by state, and nothing names a school or
//! a pack.
use std::collections::BTreeMap;

use baton::api::v1;
use common::{Daemon, ciphertext, upload_messages};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

use crate::common;

/// `GET /metrics` on `address`: the body.
async fn scrape(address: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_string()
}

/// Samples by name, each with its labels.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parses the text format's sample lines.
fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The value of `name` whose labels include all of `want` (0 if none).
fn value(samples: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue21_metrics_count_exactly_what_a_journey_did() {
    let daemon = Daemon::start_sqlite(&["--metrics-listen", "127.0.0.1:0"]).await;
    let url = daemon.printed("metrics on http://").await;
    let address = url.trim_end_matches("/metrics").to_string();
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8614001").await;
    let keys = a.keys_of(&b.laestab).await;

    // Three uploads of 3 chunks each (plus the header message).
    let mut headers = Vec::new();
    let mut sent_messages = 0;
    for _ in 0..3 {
        let data = ciphertext(20_000);
        let header = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
        sent_messages += upload_messages(&header, &data, 8192).len();
        a.upload(&header, &data, 8192).await.unwrap();
        headers.push(header);
    }
    // One refused upload: signed as another school (PermissionDenied).
    let data = ciphertext(1000);
    let mut forged = v1::PackHeader::from(&b.header_for(&b.laestab, &keys, &data));
    forged.from = a.laestab.to_string();
    sent_messages += upload_messages(&forged, &data, 8192).len();
    let refused = a.upload(&forged, &data, 8192).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The sender may not download its own pack: NotFound.
    let not_found = a.download(&headers[0].pack_id).await.unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    // One download (a server stream: the header, then 3 chunks at most of
    // the daemon's size), counted as it arrives; one acknowledgement.
    let mut stream = b
        .exchange()
        .download(b.req(v1::DownloadRequest {
            pack_id: headers[0].pack_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    while stream.message().await.unwrap().is_some() {
        received += 1;
    }
    b.exchange()
        .acknowledge(b.req(v1::AcknowledgeRequest {
            receipt: Some(b.receipt(&headers[0])),
        }))
        .await
        .unwrap();

    let text = scrape(&address).await;
    let s = parse(&text);
    let upload = [
        ("grpc_service", "baton.v1.Exchange"),
        ("grpc_method", "Upload"),
        ("grpc_type", "client_stream"),
    ];
    let with = |base: &[(&'static str, &'static str)], code: &'static str| {
        let mut v = base.to_vec();
        v.push(("grpc_code", code));
        v
    };
    assert_eq!(
        value(&s, "grpc_server_started_total", &upload),
        4.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "grpc_server_handled_total", &with(&upload, "OK")),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "grpc_server_handled_total",
            &with(&upload, "PermissionDenied")
        ),
        1.0
    );
    assert_eq!(
        value(&s, "grpc_server_msg_received_total", &upload),
        sent_messages as f64,
        "{text}"
    );
    assert_eq!(value(&s, "grpc_server_msg_sent_total", &upload), 3.0);
    assert_eq!(
        value(&s, "grpc_server_handling_seconds_count", &upload),
        4.0
    );
    let download = [("grpc_method", "Download"), ("grpc_type", "server_stream")];
    assert_eq!(value(&s, "grpc_server_started_total", &download), 2.0);
    assert_eq!(
        value(&s, "grpc_server_handled_total", &with(&download, "OK")),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "grpc_server_handled_total",
            &with(&download, "NotFound")
        ),
        1.0
    );
    assert_eq!(
        value(&s, "grpc_server_msg_sent_total", &download),
        received as f64,
        "{text}"
    );
    assert!(received >= 2, "{received}");
    let ack = [("grpc_method", "Acknowledge"), ("grpc_type", "unary")];
    assert_eq!(
        value(&s, "grpc_server_handled_total", &with(&ack, "OK")),
        1.0
    );
    assert_eq!(value(&s, "grpc_server_msg_received_total", &ack), 1.0);
    assert_eq!(value(&s, "grpc_server_msg_sent_total", &ack), 1.0);
    // Enrolment: two redemptions.
    let redeem = [("grpc_method", "Redeem")];
    assert_eq!(
        value(&s, "grpc_server_handled_total", &with(&redeem, "OK")),
        2.0
    );

    // Baton's own: packs by state and what they hold; group commits.
    assert_eq!(
        value(&s, "baton_packs", &[("state", "pending")]),
        2.0,
        "{text}"
    );
    assert_eq!(value(&s, "baton_packs", &[("state", "acknowledged")]), 1.0);
    assert_eq!(value(&s, "baton_packs", &[("state", "purged")]), 0.0);
    assert_eq!(
        value(&s, "baton_stored_bytes", &[("state", "pending")]),
        40_000.0
    );
    // Left 2026-07-22: both packs still open are past their due date.
    assert_eq!(value(&s, "baton_packs_overdue", &[]), 2.0);
    let grouped = value(&s, "baton_group_commit_packs_sum", &[]);
    assert_eq!(
        grouped, 3.0,
        "every stored upload went through a group commit"
    );
    assert!(value(&s, "baton_group_commit_seconds_count", &[]) >= 1.0);

    // Nothing names a school, a pack or a token.
    for needle in ["8612001", "8614001", headers[0].pack_id.as_str(), &a.token] {
        assert!(!text.contains(needle), "metrics mention {needle}");
    }
}
