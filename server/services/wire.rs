//! Where the store meets the wire, for every service: status codes for
//! store and wire errors, LAESTAB fields, a school's message, and a new key
//! checked for proof of possession.

use baton::Laestab;
use baton::api::{WireError, v1};
use baton::keys::{SchoolKey, enrol_statement};
use baton::pack::Kind;
use tonic::Status;

use crate::store::{StoreError, now_ms};

/// A store error as the client should see it; details of internal
/// failures go to the log, not the wire.
pub fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::Conflict(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::BadCode => Status::permission_denied(err.to_string()),
        StoreError::RolesNotGranted(_) => Status::permission_denied(format!(
            "{err}: ask the trust's operator for a code with the roles this key needs, or enrol with those"
        )),
        StoreError::Corrupt(_)
        | StoreError::Database(_)
        | StoreError::Sqlite(_)
        | StoreError::Migrate(_)
        | StoreError::Files(_)
        | StoreError::Unavailable(_) => {
            let kind = match err {
                StoreError::Corrupt(_) => "corrupt",
                StoreError::Database(_) | StoreError::Sqlite(_) => "database",
                StoreError::Migrate(_) => "migrate",
                StoreError::Files(_) => "files",
                _ => "unavailable",
            };
            metrics::counter!("baton_store_errors_total", "kind" => kind).increment(1);
            tracing::error!(error = %err, "storage failure");
            Status::unavailable("storage failure; try again")
        }
    }
}

/// A malformed wire value: `InvalidArgument` naming the field.
pub fn wire_status(err: WireError) -> Status {
    Status::invalid_argument(err.to_string())
}

/// Parses a LAESTAB field or fails with `InvalidArgument`.
pub fn parse_laestab(field: &'static str, text: &str) -> Result<Laestab, Status> {
    baton::api::convert::laestab(field, text).map_err(wire_status)
}

/// The wire form of a school, with all or only active keys.
pub fn school_message(school: &crate::store::School, active_only: bool) -> v1::School {
    v1::School {
        laestab: school.info.laestab.to_string(),
        name: school.info.name.clone(),
        phase: school.info.phase.clone(),
        urn: school.info.urn.clone(),
        keys: school
            .keys
            .iter()
            .filter(|k| !active_only || k.is_active())
            .map(v1::Key::from)
            .collect(),
        aliases: school.aliases.iter().map(ToString::to_string).collect(),
        peer: String::new(),
    }
}

/// Checks a new key's proof of possession and stamps its creation time.
///
/// With `roles_from_code` (enrolment), a key that names no roles is
/// accepted with none: the code it is redeemed with gives them.
pub fn new_key(
    laestab: &baton::Laestab,
    key: Option<&v1::Key>,
    proof: &[u8],
    roles_from_code: bool,
) -> Result<SchoolKey, Status> {
    let key = key.ok_or_else(|| Status::invalid_argument("field `key`: missing"))?;
    let mut key = SchoolKey::from_wire(key, !roles_from_code).map_err(wire_status)?;
    key.public
        .verify(&enrol_statement(laestab, key.key_id()), proof)
        .map_err(|_| {
            Status::invalid_argument(
                "field `proof`: not a signature by `key` over the enrolment statement",
            )
        })?;
    key.created_at_ms = now_ms();
    key.revoked_at_ms = None;
    Ok(key)
}

/// A stored header's kind (an unknown value counts as the stricter one:
/// shown to DSL keys only, due within the shorter clock).
pub fn kind_of(header: &v1::PackHeader) -> Kind {
    match v1::PackKind::try_from(header.kind) {
        Ok(v1::PackKind::Transfer) => Kind::Transfer,
        _ => Kind::Safeguarding,
    }
}
