//! What the bench's own clients need beside the shared test helpers
//! (`tests/it/common`, included by path): exchange clients with the bench's
//! message limit, the key a bench school enrols, and bench pupils.

use crate::*;

pub(crate) fn exchange(channel: &Channel) -> ExchangeClient<Channel> {
    ExchangeClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub(crate) fn school_key(identity: &Identity) -> SchoolKey {
    SchoolKey {
        public: identity.public(),
        label: "bench".into(),
        roles: vec![Role::Dsl, Role::Staff],
        created_at_ms: 0,
        revoked_at_ms: None,
        endorsement: None,
        revocation: None,
    }
}

/// Makes a trust directory key, its secret in `secret`; returns its public
/// half (what `batond serve --directory-key` takes).
pub(crate) async fn new_directory_key(secret: &Path) -> Res<String> {
    let out = common::batond()
        .arg("new-directory-key")
        .arg("--out")
        .arg(secret)
        .output()
        .await?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok(stdout.lines().next().unwrap_or_default().to_string())
}

/// Approves an enrolled bench school's key with the directory key whose
/// secret is in `secret`, as the trust's operator does.
pub(crate) async fn approve(daemon: &Daemon, school: &School, secret: &Path) -> Res<()> {
    let laestab = school.laestab.to_string();
    let key_id = school.identity.public().key_id().to_string();
    let out = daemon
        .approve_key(&laestab, &key_id, &secret.to_string_lossy())
        .await;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(())
}

// ---------------------------------------------------------------- packs

/// A valid UPN with the given serial.
pub(crate) fn upn(serial: u32) -> String {
    let body = format!("86120012{:01}{:03}", serial / 1000 % 10, serial % 1000);
    let check = baton::upn::check_letter(body.as_bytes());
    format!("{}{body}", char::from(check))
}

pub(crate) fn record(serial: u32) -> TransitionRecord {
    TransitionRecord {
        upn: upn(serial),
        surname: format!("Bench-{serial}"),
        forename: "Pupil".into(),
        dob: "2015-03-04".into(),
        sex: "F".into(),
        notes: "A pastoral note of a sentence or two.".into(),
        ..Default::default()
    }
}
