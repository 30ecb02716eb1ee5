//! Issue 23: what a hostile peer (another trust's daemon, or a thief of
//! its disk, holding its federation certificate) can and cannot relay or
//! pass back, calling the federation listener directly.

use crate::client_lifecycle::stderr;
use crate::common::Daemon;
use crate::common::cli::{pupil, send_records};
use crate::daemon_federation::{audited, peer_of, schools_until, two_trusts_with};

/// A `Federation` client to `to`'s federation listener presenting
/// `from`'s federation certificate: what `from`'s daemon (or whoever holds
/// its disk) can send.
pub(crate) async fn as_peer(
    from: &Daemon,
    to: &Daemon,
) -> baton::api::v1::federation_client::FederationClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let url = to.printed("federation on ").await;
    let read = |d: &Daemon, f: &str| std::fs::read(d.data.join("federation").join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(to, "ca.pem")))
        .identity(Identity::from_pem(
            read(from, "cert.pem"),
            read(from, "key.pem"),
        ))
        .domain_name("batond-federation");
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    baton::api::v1::federation_client::FederationClient::new(channel)
}

/// Relays `header` and `ciphertext` through `client`.
pub(crate) async fn relay(
    client: &mut baton::api::v1::federation_client::FederationClient<tonic::transport::Channel>,
    header: baton::api::v1::PackHeader,
    ciphertext: &[u8],
) -> Result<baton::api::v1::RelayReceipt, tonic::Status> {
    use baton::api::v1::{RelayMessage, relay_message::Part};
    let messages = vec![
        RelayMessage {
            part: Some(Part::Header(header)),
        },
        RelayMessage {
            part: Some(Part::Chunk(ciphertext.to_vec().into())),
        },
    ];
    client
        .relay(futures_util::stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// What a hostile peer (B's daemon, or a thief of its disk) can and cannot
/// relay to A: only packs from B's schools, signed by their keys, to A's
/// schools, sealed to their keys; and it can pass back only receipts for
/// packs A relayed to it, signed by its school's key.
#[tokio::test]
async fn issue23_a_hostile_peer_cannot_pass_off_packs_or_receipts() {
    use baton::api::v1;
    use baton::pack::{FORMAT_VERSION, Header, Kind, PackId, recipients_for};
    use sha2::{Digest as _, Sha256};

    let root = tempfile::tempdir().unwrap();
    // A holds at most 5,000 bytes from B's schools waiting.
    let quota = ["--federation-peer-quota-bytes", "5000"];
    let (a, b, primary, _secondary) = two_trusts_with(root.path(), &quota).await;
    // A school of B's, enrolled through the API so the test holds its key.
    let sender = b.enrol("9264003").await;
    schools_until(&primary, |l| peer_of(l, "9264003").is_some()).await;
    let to: baton::Laestab = "8612001".parse().unwrap();
    let keys = sender.keys_of(&to).await;
    let ciphertext = crate::common::ciphertext(3000);
    let signed_header =
        |from: &str, keys: &[baton::keys::SchoolKey], supersedes: Option<PackId>| {
            let signed = sender
                .identity
                .sign_header(Header {
                    format_version: FORMAT_VERSION,
                    pack_id: PackId::new(),
                    from: from.parse().unwrap(),
                    to,
                    kind: Kind::Transfer,
                    created_at_ms: 1,
                    ciphertext_len: ciphertext.len() as u64,
                    ciphertext_sha256: Sha256::digest(&ciphertext).into(),
                    sender_key_id: sender.identity.key_id(),
                    recipient_key_ids: recipients_for(Kind::Transfer, keys)
                        .iter()
                        .map(|k| k.key_id())
                        .collect(),
                    left_on: Some(time::macros::date!(2026 - 07 - 22)),
                    supersedes,
                    forwarded: None,
                })
                .unwrap();
            v1::PackHeader::from(&signed)
        };
    let header_from = |from: &str, keys: &[baton::keys::SchoolKey]| signed_header(from, keys, None);
    let mut client = as_peer(&b, &a).await;

    // Bytes that are not the ones signed for: refused, nothing stored.
    let status = relay(&mut client, header_from("9264003", &keys), &ciphertext[1..])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A pack from B's school, signed by its key: stored, and A's signed
    // relay receipt comes back; relayed again, the same answer.
    let good = header_from("9264003", &keys);
    let first = relay(&mut client, good.clone(), &ciphertext).await.unwrap();
    let again = relay(&mut client, good.clone(), &ciphertext).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.pack_id, good.pack_id);

    // A second pack would take B's schools past A's quota for them: refused
    // until A's school acknowledges (B's queue tries again later).
    let status = relay(&mut client, header_from("9264003", &keys), &ciphertext)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("quota"), "{status:?}");

    // Claiming to come from A's own school: refused.
    let status = relay(&mut client, header_from("8612001", &keys), &ciphertext)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not one that trust-b serves"),
        "{status:?}"
    );
    // A header altered after signing (another destination): refused.
    let mut altered = header_from("9264003", &keys);
    altered.created_at_ms = 2;
    let status = relay(&mut client, altered, &ciphertext).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("signature"), "{status:?}");
    // Sealed to a key A's school does not hold (the peer's own): refused.
    let status = relay(
        &mut client,
        header_from(
            "9264003",
            &[sender.keys_of(&sender.laestab).await[0].clone()],
        ),
        &ciphertext,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");

    // A correction names a pack by id: B may correct only what it relayed
    // here itself, not a pack A's own school sent (which B knows the id of,
    // as that pack was addressed to B's school).
    let out = send_records(&primary, root.path(), "9264002", &[pupil("Ward", 7)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = primary.json(&["sent", "--json"]).await;
    let theirs: PackId = sent[0]["id"].as_str().unwrap().parse().unwrap();
    let status = relay(
        &mut client,
        signed_header("9264003", &keys, Some(theirs)),
        &ciphertext,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("supersedes"), "{status:?}");

    // A receipt for a pack A never relayed to B (the one B relayed to A):
    // refused, whoever signed it.
    let receipt = sender.receipt(&good);
    let status = client
        .return_receipt(v1::ReturnReceiptRequest {
            receipt: Some(receipt),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Only the good pack reached A's school.
    let inbox = primary.json(&["inbox", "--json"]).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["from"], "9264003");
    assert_eq!(audited(&a, "pack.relay.in").await.len(), 1);
}
