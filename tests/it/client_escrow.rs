//! Issue 19 item 1: pupils whose next school is unknown. Without an escrow
//! the packs are refused, saying how to enable one; with the trust's escrow
//! enrolled, packs to `XXXXXXX` and `MMMMMMM` are sealed to its keys and
//! held, nothing readable on the server, listed in the escrow's inbox.

use crate::client_lifecycle::{sent, stderr};
use sha2::Digest as _;

use crate::common::cli::{enrol, init};
use crate::common::reliability::{assert_daemon_holds_no_plaintext, distinctive_record, needles};
use crate::common::{Daemon, upload_messages, with_token};

/// A key holder of the trust's escrow, enrolled with `batond admin escrow
/// add` and `baton init --school XXXXXXX`.
pub(crate) async fn enrol_escrow(
    daemon: &Daemon,
    root: &std::path::Path,
    roles: &[&str],
) -> crate::common::cli::Home {
    let added = daemon
        .admin(&[
            "admin",
            "escrow",
            "add",
            "--name",
            "Trust data lead",
            "--json",
        ])
        .await;
    assert!(added.status.success(), "{}", stderr(&added));
    let code = serde_json::from_slice::<serde_json::Value>(&added.stdout).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    init(daemon, root, "XXXXXXX", &code, roles).await
}

/// A one-row class spreadsheet sending `record` to `to`.
fn spreadsheet(
    root: &std::path::Path,
    record: &baton::record::TransitionRecord,
    to: &str,
) -> String {
    let mut cells: Vec<String> = baton::csv::COLUMNS.iter().map(|_| String::new()).collect();
    for (col, value) in [
        ("upn", record.upn.as_str()),
        ("surname", &record.surname),
        ("forename", &record.forename),
        ("dob", &record.dob),
        ("sex", &record.sex),
        ("destination", to),
    ] {
        let i = baton::csv::COLUMNS.iter().position(|c| *c == col).unwrap();
        cells[i] = value.to_string();
    }
    let path = root.join(format!("class-{}.csv", record.upn));
    std::fs::write(
        &path,
        format!("{}\n{}\n", baton::csv::COLUMNS.join(","), cells.join(",")),
    )
    .unwrap();
    path.display().to_string()
}

async fn issue19_escrow_holds_unknown_destinations(daemon: Daemon) {
    let root = tempfile::tempdir().unwrap();
    let primary = enrol(
        &daemon,
        root.path(),
        "8612001",
        "primary",
        &["dsl", "staff"],
    )
    .await;
    let (lost, abroad) = (
        distinctive_record("Lost", 2001, 1),
        distinctive_record("Abroad", 2001, 2),
    );
    let lost_dir = root.path().join("lost");
    std::fs::create_dir_all(&lost_dir).unwrap();
    std::fs::write(lost_dir.join("record.json"), lost.to_json()).unwrap();
    let lost_dir = lost_dir.display().to_string();
    let sheet = spreadsheet(root.path(), &abroad, "MMMMMMM");

    // Without an escrow: refused, saying how to enable one.
    for args in [
        vec!["send", "--to", "XXXXXXX", lost_dir.as_str()],
        vec!["send", "--csv", sheet.as_str()],
    ] {
        let out = primary.baton(&args).await;
        assert!(!out.status.success());
        let said = stderr(&out);
        assert!(said.contains("no escrow holder"), "{said}");
        assert!(said.contains("batond admin escrow add"), "{said}");
    }
    let refused = daemon
        .admin(&[
            "admin", "school", "add", "XXXXXXX", "--name", "X", "--phase", "primary",
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("escrow add"),
        "{}",
        stderr(&refused)
    );

    let escrow = enrol_escrow(&daemon, root.path(), &["dsl", "staff"]).await;
    // Another code for a second key holder: as for `school add`, the code
    // is the last line printed.
    let again = daemon
        .admin(&["admin", "escrow", "add", "--name", "Trust data lead"])
        .await;
    assert!(again.status.success(), "{}", stderr(&again));
    let text = String::from_utf8(again.stdout).unwrap();
    let code = text.lines().last().unwrap().trim();
    crate::common::cli::init(&daemon, root.path(), "XXXXXXX", code, &["dsl"]).await;

    primary.ok(&["send", "--to", "XXXXXXX", &lost_dir]).await;
    primary.ok(&["send", "--csv", &sheet]).await;
    let listing = sent(&primary).await;
    let mut to: Vec<&str> = listing.iter().map(|e| e["to"].as_str().unwrap()).collect();
    to.sort_unstable();
    assert_eq!(to, ["MMMMMMM", "XXXXXXX"], "{listing:#?}");

    let held = escrow.json(&["inbox", "--json"]).await;
    assert_eq!(held.len(), 2, "{held:#?}");
    for e in &held {
        assert_eq!(e["from"], "8612001");
        assert!(e["due"].is_string(), "{e}");
    }
    let mut needles_all = needles(&lost);
    needles_all.extend(needles(&abroad));
    assert_daemon_holds_no_plaintext(&daemon, &needles_all);
    // The escrow holder can open what it holds.
    let out_dir = root.path().join("held").display().to_string();
    escrow.ok(&["pull", "--all", "--out", &out_dir]).await;
    assert!(
        root.path()
            .join("held/8612001")
            .join(&lost.upn)
            .join("record.json")
            .exists()
    );

    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    assert!(export.lines().any(|l| l.contains("escrow.add")));
    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
}

on_both_backends!(issue19_escrow_holds_unknown_destinations);

/// Uploads, with `home`'s key and token, a forwarding pack of `original`
/// (sent as `from`, to 8614001, random bytes) that `baton readdress` would
/// not make; returns the server's refusal.
async fn forge_forwarding(
    daemon: &Daemon,
    home: &crate::common::cli::Home,
    from: &str,
    original: &baton::pack::SignedHeader,
) -> tonic::Status {
    use baton::api::v1;
    let identity = baton::crypto::Identity::from_file_bytes(
        &std::fs::read(home.dir.join("identity.txt")).unwrap(),
        None,
    )
    .unwrap();
    let data = crate::common::ciphertext(1000);
    let forged = identity
        .sign_header(baton::pack::Header {
            format_version: baton::pack::FORMAT_VERSION,
            pack_id: baton::pack::PackId::new(),
            from: from.parse().unwrap(),
            to: "8614001".parse().unwrap(),
            kind: baton::pack::Kind::Transfer,
            created_at_ms: 1,
            ciphertext_len: data.len() as u64,
            ciphertext_sha256: sha2::Sha256::digest(&data).into(),
            sender_key_id: identity.key_id(),
            recipient_key_ids: vec![identity.key_id()],
            left_on: original.header().left_on,
            supersedes: None,
            forwarded: Some(baton::pack::Forwarded {
                original: Box::new(original.clone()),
                original_age_header: b"age-encryption.org/v1\n".to_vec(),
            }),
        })
        .unwrap();
    v1::exchange_client::ExchangeClient::new(daemon.channel().await)
        .upload(with_token(
            &home.token(),
            tokio_stream::iter(upload_messages(&v1::PackHeader::from(&forged), &data, 512)),
        ))
        .await
        .unwrap_err()
}

/// The original header `home` sealed as pack `id`, from its outbox journal.
pub(crate) fn journal_header(
    home: &crate::common::cli::Home,
    id: &str,
) -> baton::pack::SignedHeader {
    use prost::Message as _;
    for entry in std::fs::read_dir(home.dir.join("outbox")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let e: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            if e["pack_id"] == id {
                let bytes = hex::decode(e["header"].as_str().unwrap()).unwrap();
                let wire = baton::api::v1::PackHeader::decode(bytes.as_slice()).unwrap();
                return baton::pack::SignedHeader::try_from(&wire).unwrap();
            }
        }
    }
    panic!("no journal entry for {id}");
}

/// Issue 19 item 1: the escrow re-addresses held packs (one from a CTF to
/// `XXXXXXX`, one to `MMMMMMM`) to the school the pupil joined: the school
/// sees who wrote and who forwarded them, pulls the `<Pupil>` element byte
/// for byte, acknowledges, and the original sender verifies that receipt.
/// Only the escrow may re-address, and only once.
async fn issue19_readdress(daemon: Daemon) {
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
    let mut escrows = Vec::new();
    for roles in [&["dsl", "staff"][..], &["dsl"][..]] {
        escrows.push(enrol_escrow(&daemon, root.path(), roles).await);
    }
    let (lost, abroad) = (
        distinctive_record("Lost", 2002, 1),
        distinctive_record("Abroad", 2002, 2),
    );
    let pupil_xml = baton::ctf::pupil_xml_from_record(&lost);
    let mut xml = Vec::new();
    let header = baton::ctf::CtfHeader::new(
        baton::Laestab::parse("8612001").unwrap(),
        baton::Destination::Unknown,
        time::macros::datetime!(2026-07-16 10:00:00),
    );
    baton::ctf::write_ctf(&mut xml, &header, vec![pupil_xml.clone()]).unwrap();
    let ctf = root.path().join("8612001_CTF_XXXXXXX_001.xml");
    std::fs::write(&ctf, xml).unwrap();
    primary
        .ok(&["send", "--ctf", &ctf.display().to_string()])
        .await;
    let dir = root.path().join("abroad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record.json"), abroad.to_json()).unwrap();
    primary
        .ok(&["send", "--to", "MMMMMMM", &dir.display().to_string()])
        .await;
    let held = escrows[0].json(&["inbox", "--json"]).await;
    let id_of = |to: &str| {
        held.iter().find(|e| e["to"] == to).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (id_lost, id_abroad) = (id_of("XXXXXXX"), id_of("MMMMMMM"));

    // A school may not re-address: its client says so, and so does the
    // server to a forwarding header it signs itself.
    let out = secondary
        .baton(&["readdress", &id_lost, "--to", "8614002"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only the trust's escrow"),
        "{}",
        stderr(&out)
    );
    let original = journal_header(&primary, &id_lost);
    let refused = forge_forwarding(&daemon, &secondary, "8614001", &original).await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    for id in [&id_lost, &id_abroad] {
        let said = escrows[0].ok(&["readdress", id, "--to", "8614001"]).await;
        assert!(said.contains("re-addressed to 8614001"), "{said}");
    }
    // Once only: the held copy is gone, and another forwarding of the same
    // pack (by another escrow key holder) is refused by the server.
    let out = escrows[1]
        .baton(&["readdress", &id_lost, "--to", "8614001"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("re-addressed by the trust's escrow"),
        "{}",
        stderr(&out)
    );
    let refused = forge_forwarding(&daemon, &escrows[1], "XXXXXXX", &original).await;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("re-addressed already"),
        "{refused:?}"
    );
    assert!(escrows[0].json(&["inbox", "--json"]).await.is_empty());

    let inbox = secondary.json(&["inbox", "--json"]).await;
    assert_eq!(inbox.len(), 2, "{inbox:#?}");
    for e in &inbox {
        assert_eq!(
            (e["from"].as_str(), e["via"].as_str()),
            (Some("8612001"), Some("XXXXXXX")),
            "{e}"
        );
    }
    let received = root.path().join("received");
    let mis = root.path().join("mis");
    secondary
        .ok(&[
            "pull",
            "--all",
            "--out",
            &received.display().to_string(),
            "--ctf-dir",
            &mis.display().to_string(),
        ])
        .await;
    let pack: serde_json::Value = serde_json::from_slice(
        &std::fs::read(received.join("8612001").join(&lost.upn).join("pack.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pack["from"], "8612001");
    assert_eq!(pack["via"], "XXXXXXX");
    assert_eq!(pack["original_id"], id_lost.as_str());
    assert_eq!(pack["verified"], true);
    let ctf_out: Vec<_> = std::fs::read_dir(&mis)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        ctf_out
            .iter()
            .any(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains(&pupil_xml)),
        "the <Pupil> element did not reach the CTF byte for byte"
    );
    secondary.ok(&["ack", "--all-pulled"]).await;

    // Once forwarded, the sender cannot recall it from the escrow: it is
    // told where the record went.
    let out = primary.baton(&["recall", &id_lost]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("re-addressed by the trust's escrow"),
        "{}",
        stderr(&out)
    );

    let listing = sent(&primary).await;
    for id in [&id_lost, &id_abroad] {
        let e = listing.iter().find(|e| e["id"] == id.as_str()).unwrap();
        assert_eq!(e["state"], "readdressed", "{e}");
        assert_eq!(e["readdressed_to"], "8614001", "{e}");
        assert_eq!(e["receipt_verified"], true, "{e}");
    }
    let mut needles_all = needles(&lost);
    needles_all.extend(needles(&abroad));
    assert_daemon_holds_no_plaintext(&daemon, &needles_all);
    let export =
        String::from_utf8(daemon.admin(&["admin", "audit", "export"]).await.stdout).unwrap();
    assert_eq!(
        export
            .lines()
            .filter(|l| l.contains("pack.readdress"))
            .count(),
        2
    );
    let audit = daemon.admin(&["admin", "audit", "verify"]).await;
    assert!(audit.status.success(), "{}", stderr(&audit));
}

on_both_backends!(issue19_readdress);
