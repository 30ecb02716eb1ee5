//! Authorisation matrix over every RPC, on SQLite and PostgreSQL: success, unauthenticated (no token,
//! bad token, revoked token), and another school's data.
use crate::common;

use std::time::Duration;

use baton::api::v1;
use baton::api::v1::enrolment_client::EnrolmentClient;
use baton::crypto::Identity;
use baton::keys::Role;
use common::{Daemon, School, ciphertext, key_and_proof, with_token};
use tonic::{Code, Status};

#[derive(Debug, Clone, Copy)]
enum Method {
    ListSchools,
    GetSchool,
    AddKey,
    RevokeKey,
    Upload,
    Inbox,
    Download,
    DownloadMany,
    ConfirmDownload,
    ConfirmDownloads,
    Acknowledge,
    AcknowledgeMany,
    Sent,
    Watch,
    Limits,
}

const ALL: [Method; 15] = [
    Method::ListSchools,
    Method::GetSchool,
    Method::AddKey,
    Method::RevokeKey,
    Method::Upload,
    Method::Inbox,
    Method::Download,
    Method::DownloadMany,
    Method::ConfirmDownload,
    Method::ConfirmDownloads,
    Method::Acknowledge,
    Method::AcknowledgeMany,
    Method::Sent,
    Method::Watch,
    Method::Limits,
];

struct World {
    a: School,
    b: School,
    /// A pack from a to b, stored.
    pack: v1::PackHeader,
}

/// Who the request is about: the caller's own data or another school's.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Own,
    Other,
}

/// Calls `method` as `caller` with `token`; for `Target::Other` the request
/// names another school's data.
async fn call(
    w: &World,
    method: Method,
    caller: &School,
    token: &str,
    target: Target,
) -> Result<(), Status> {
    let other = if caller.laestab == w.a.laestab {
        &w.b
    } else {
        &w.a
    };
    let named = if target == Target::Own { caller } else { other };
    match method {
        Method::ListSchools => {
            let resp = caller
                .directory()
                .list_schools(with_token(token, v1::ListSchoolsRequest {}))
                .await?;
            assert!(resp.into_inner().schools.len() >= 2);
        }
        Method::GetSchool => {
            let req = v1::GetSchoolRequest {
                laestab: named.laestab.to_string(),
                peer: String::new(),
            };
            caller
                .directory()
                .get_school(with_token(token, req))
                .await?;
        }
        Method::AddKey => {
            let (key, proof) = key_and_proof(&named.laestab, &Identity::generate(), &[Role::Staff]);
            let req = v1::AddKeyRequest {
                laestab: named.laestab.to_string(),
                key: Some(key),
                proof,
            };
            caller.directory().add_key(with_token(token, req)).await?;
        }
        Method::RevokeKey => {
            // A spare key of the named school, added with its own token.
            let (key, proof) = key_and_proof(&named.laestab, &Identity::generate(), &[Role::Staff]);
            let key_id = key.key_id.clone();
            let add = v1::AddKeyRequest {
                laestab: named.laestab.to_string(),
                key: Some(key),
                proof,
            };
            named.directory().add_key(named.req(add)).await.unwrap();
            let req = v1::RevokeKeyRequest {
                laestab: named.laestab.to_string(),
                key_id,
                ..Default::default()
            };
            caller
                .directory()
                .revoke_key(with_token(token, req))
                .await?;
        }
        Method::Upload => {
            // Own: from = caller. Other: from = another school, signed by it.
            let (from, to) = if target == Target::Own {
                (caller, other)
            } else {
                (other, caller)
            };
            let keys = from.keys_of(&to.laestab).await;
            let data = ciphertext(3000);
            let header = v1::PackHeader::from(&from.header_for(&to.laestab, &keys, &data));
            let msgs = common::upload_messages(&header, &data, 1000);
            caller
                .exchange()
                .upload(with_token(token, tokio_stream::iter(msgs)))
                .await?;
        }
        Method::Inbox => {
            let resp = caller
                .exchange()
                .inbox(with_token(token, v1::InboxRequest::default()))
                .await?;
            let ids: Vec<String> = resp
                .into_inner()
                .packs
                .iter()
                .map(|p| p.header.as_ref().unwrap().pack_id.clone())
                .collect();
            if caller.laestab != w.pack.to.parse().unwrap() {
                assert!(
                    !ids.contains(&w.pack.pack_id),
                    "another school's pack listed"
                );
                return Err(Status::not_found("not in this inbox"));
            }
        }
        Method::Download => {
            let req = v1::DownloadRequest {
                pack_id: w.pack.pack_id.clone(),
            };
            let mut stream = caller
                .exchange()
                .download(with_token(token, req))
                .await?
                .into_inner();
            while stream.message().await?.is_some() {}
        }
        Method::DownloadMany => {
            // A pack refused within the call comes back as its error; one
            // served must be the pack asked for, whole.
            let req = v1::DownloadManyRequest {
                pack_ids: vec![w.pack.pack_id.clone()],
            };
            let mut stream = caller
                .exchange()
                .download_many(with_token(token, req))
                .await?
                .into_inner();
            let one = stream.message().await?.expect("an answer for the pack");
            assert_eq!(one.pack_id, w.pack.pack_id);
            assert!(stream.message().await?.is_none(), "one answer a pack");
            refused(one.code, &one.message)?;
            assert_eq!(one.header.as_ref(), Some(&w.pack));
            assert_eq!(one.ciphertext.len() as u64, w.pack.ciphertext_length);
        }
        Method::ConfirmDownload => {
            let req = v1::ConfirmDownloadRequest {
                pack_id: w.pack.pack_id.clone(),
                ciphertext_sha256: w.pack.ciphertext_sha256.clone(),
            };
            caller
                .exchange()
                .confirm_download(with_token(token, req))
                .await?;
        }
        Method::ConfirmDownloads => {
            // A confirmation refused within the call comes back as its error.
            let req = v1::ConfirmDownloadsRequest {
                packs: vec![v1::ConfirmDownloadRequest {
                    pack_id: w.pack.pack_id.clone(),
                    ciphertext_sha256: w.pack.ciphertext_sha256.clone(),
                }],
            };
            let resp = caller
                .exchange()
                .confirm_downloads(with_token(token, req))
                .await?
                .into_inner();
            assert_eq!(resp.outcomes.len(), 1);
            refused(resp.outcomes[0].code, &resp.outcomes[0].message)?;
        }
        Method::Limits => {
            let limits = caller
                .exchange()
                .limits(with_token(token, v1::LimitsRequest {}))
                .await?
                .into_inner();
            assert!(limits.max_pack_bytes > 0);
        }
        Method::Acknowledge => {
            let req = v1::AcknowledgeRequest {
                receipt: Some(caller.receipt(&w.pack)),
            };
            caller
                .exchange()
                .acknowledge(with_token(token, req))
                .await?;
        }
        Method::AcknowledgeMany => {
            // A receipt refused within the call comes back as its error.
            let req = v1::AcknowledgeManyRequest {
                receipts: vec![caller.receipt(&w.pack)],
            };
            let resp = caller
                .exchange()
                .acknowledge_many(with_token(token, req))
                .await?
                .into_inner();
            assert_eq!(resp.outcomes.len(), 1);
            refused(resp.outcomes[0].code, &resp.outcomes[0].message)?;
        }
        Method::Sent => {
            let resp = caller
                .exchange()
                .sent(with_token(token, v1::SentRequest::default()))
                .await?;
            let ids: Vec<String> = resp
                .into_inner()
                .packs
                .iter()
                .map(|p| p.header.as_ref().unwrap().pack_id.clone())
                .collect();
            if caller.laestab != w.pack.from.parse().unwrap() {
                assert!(
                    !ids.contains(&w.pack.pack_id),
                    "another school's sent pack listed"
                );
                return Err(Status::not_found("not sent by this school"));
            }
        }
        Method::Watch => {
            let mut stream = caller
                .exchange()
                .watch(with_token(token, v1::WatchRequest {}))
                .await?
                .into_inner();
            // Another school sends the caller a pack; the event must arrive.
            let keys = other.keys_of(&caller.laestab).await;
            let data = ciphertext(100);
            let header = other.header_for(&caller.laestab, &keys, &data);
            other
                .upload(&v1::PackHeader::from(&header), &data, 100)
                .await
                .unwrap();
            let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .unwrap()?
                .unwrap();
            assert_eq!(
                event.header.unwrap().pack_id,
                header.header().pack_id.to_string()
            );
        }
    }
    Ok(())
}

/// One answer within a many-to-a-call answer, as the one-pack call's error.
fn refused(code: i32, message: &str) -> Result<(), Status> {
    match code {
        0 => Ok(()),
        code => Err(Status::new(Code::from_i32(code), message)),
    }
}

/// The school that naturally makes each call in the success case.
fn natural(w: &World, method: Method) -> &School {
    match method {
        Method::Inbox
        | Method::Download
        | Method::DownloadMany
        | Method::ConfirmDownload
        | Method::ConfirmDownloads
        | Method::Acknowledge
        | Method::AcknowledgeMany
        | Method::Watch => &w.b,
        _ => &w.a,
    }
}

async fn every_method_checks_the_caller(daemon: Daemon) {
    let a = daemon.enrol("8612001").await;
    let b = daemon.enrol("8612002").await;
    let c = daemon.enrol("8612003").await;
    let revoked = daemon.enrol("8612004").await;
    let out = daemon
        .admin(&["admin", "token", "revoke", "--school", "8612004"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let keys = a.keys_of(&b.laestab).await;
    let data = ciphertext(5000);
    let pack = v1::PackHeader::from(&a.header_for(&b.laestab, &keys, &data));
    a.upload(&pack, &data, 2048).await.unwrap();
    let w = World { a, b, pack };

    // Unauthenticated: no token, a malformed token, an unknown token, a revoked one.
    let bad_tokens = [
        "",
        "not-a-token",
        "bt_0000000000000000000000000000000000000000000000000000000000000000",
        revoked.token.as_str(),
    ];
    let mut cells = 0;
    for method in ALL {
        for token in bad_tokens {
            cells += 1;
            let err = call(&w, method, natural(&w, method), token, Target::Own)
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::Unauthenticated,
                "{method:?} with token {token:?}: {err:?}"
            );
        }
    }

    // Another school's data.
    let expect_other = [
        (Method::AddKey, &w.a, Code::PermissionDenied),
        (Method::RevokeKey, &w.a, Code::PermissionDenied),
        (Method::Upload, &w.a, Code::PermissionDenied),
        (Method::Inbox, &c, Code::NotFound),
        (Method::Download, &c, Code::NotFound),
        (Method::Download, &w.a, Code::NotFound),
        (Method::DownloadMany, &c, Code::NotFound),
        (Method::DownloadMany, &w.a, Code::NotFound),
        (Method::ConfirmDownload, &c, Code::NotFound),
        (Method::ConfirmDownload, &w.a, Code::NotFound),
        (Method::ConfirmDownloads, &c, Code::NotFound),
        (Method::ConfirmDownloads, &w.a, Code::NotFound),
        (Method::Acknowledge, &c, Code::NotFound),
        (Method::AcknowledgeMany, &c, Code::NotFound),
        (Method::Sent, &c, Code::NotFound),
    ];
    for (method, caller, code) in expect_other {
        cells += 1;
        let err = call(&w, method, caller, &caller.token, Target::Other)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            code,
            "{method:?} by {}: {err:?}",
            caller.laestab
        );
    }

    // Success, each by the school that may make the call.
    for method in ALL {
        cells += 1;
        let caller = natural(&w, method);
        call(&w, method, caller, &caller.token, Target::Own)
            .await
            .unwrap_or_else(|e| panic!("{method:?}: {e:?}"));
    }
    // A sender sees the receipt; the pack left the inbox.
    let sent =
        w.a.exchange()
            .sent(w.a.req(v1::SentRequest::default()))
            .await
            .unwrap()
            .into_inner();
    let entry = sent
        .packs
        .iter()
        .find(|p| p.header.as_ref().unwrap().pack_id == w.pack.pack_id)
        .unwrap();
    assert_eq!(entry.state, v1::PackState::Acknowledged as i32);
    assert!(entry.receipt.is_some() && entry.downloaded_at_ms > 0);

    // Redeem: a wrong code, or one already used, is PermissionDenied.
    let mut enrol = EnrolmentClient::new(c.channel.clone());
    let req = common::redeem_request(&c.laestab, "AAAA-BBBB", &Identity::generate());
    assert_eq!(
        enrol.redeem(req).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    cells += 1;
    println!("authorisation matrix: {cells} cells, all as expected");
}

async fn revocation_is_immediate_and_tls_is_required(daemon: Daemon) {
    let a = daemon.enrol("8612001").await;
    let mut exchange = a.exchange();
    exchange
        .inbox(a.req(v1::InboxRequest::default()))
        .await
        .unwrap();
    let out = daemon
        .admin(&["admin", "token", "revoke", "--school", "8612001"])
        .await;
    assert!(out.status.success());
    // The very next call on the same connection is refused.
    let err = exchange
        .inbox(a.req(v1::InboxRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A plaintext client gets nothing from the TLS port.
    let plain = daemon.url.replace("https://", "http://");
    let refused = match tonic::transport::Channel::from_shared(plain)
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(channel) => baton::api::v1::exchange_client::ExchangeClient::new(channel)
            .inbox(with_token(&a.token, v1::InboxRequest::default()))
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client was served");

    // A client trusting another CA (another daemon's) refuses to connect.
    let other = Daemon::start(&[]).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&other.ca).unwrap(),
        ))
        .domain_name("localhost");
    let wrong_ca = tonic::transport::Channel::from_shared(daemon.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    assert!(
        wrong_ca.is_err(),
        "a server under an untrusted CA was accepted"
    );
}

on_both_backends!(every_method_checks_the_caller);
on_both_backends!(revocation_is_immediate_and_tls_is_required);
