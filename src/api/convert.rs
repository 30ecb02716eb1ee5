//! Conversions between generated wire types and domain types. Everything
//! that arrives over the network is checked here, once, and a failure names
//! the field that is wrong.

use super::v1;
use crate::Laestab;
use crate::keys::{KeyId, PublicKey, Role, SchoolKey};
use crate::pack::{AttachmentMeta, Header, Kind, Manifest, Receipt, SignedHeader, SignedReceipt};
use crate::record::{Attendance, Ks2Results, TransitionRecord};

/// A wire message that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct WireError {
    /// The proto field at fault, e.g. `header.to`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn wire(field: &'static str, problem: impl ToString) -> WireError {
    WireError {
        field,
        problem: problem.to_string(),
    }
}

fn hash32(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], WireError> {
    bytes
        .try_into()
        .map_err(|_| wire(field, "must be 32 bytes"))
}

fn sig64(field: &'static str, bytes: &[u8]) -> Result<[u8; 64], WireError> {
    bytes
        .try_into()
        .map_err(|_| wire(field, "must be a 64-byte Ed25519 signature"))
}

/// Parses a LAESTAB field.
pub fn laestab(field: &'static str, text: &str) -> Result<Laestab, WireError> {
    Laestab::parse(text).map_err(|e| wire(field, e))
}

/// Parses a key id field.
pub fn key_id(field: &'static str, text: &str) -> Result<KeyId, WireError> {
    text.parse().map_err(|e| wire(field, e))
}

impl From<Kind> for v1::PackKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Transfer => Self::Transfer,
            Kind::Safeguarding => Self::Safeguarding,
        }
    }
}

/// Parses a `PackKind` enum value.
pub fn kind(field: &'static str, value: i32) -> Result<Kind, WireError> {
    match v1::PackKind::try_from(value) {
        Ok(v1::PackKind::Transfer) => Ok(Kind::Transfer),
        Ok(v1::PackKind::Safeguarding) => Ok(Kind::Safeguarding),
        _ => Err(wire(
            field,
            "must be PACK_KIND_TRANSFER or PACK_KIND_SAFEGUARDING",
        )),
    }
}

impl From<Role> for v1::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Dsl => Self::Dsl,
            Role::Senco => Self::Senco,
            Role::Staff => Self::Staff,
        }
    }
}

/// Parses a `Role` enum value.
pub fn role(field: &'static str, value: i32) -> Result<Role, WireError> {
    match v1::Role::try_from(value) {
        Ok(v1::Role::Dsl) => Ok(Role::Dsl),
        Ok(v1::Role::Senco) => Ok(Role::Senco),
        Ok(v1::Role::Staff) => Ok(Role::Staff),
        _ => Err(wire(field, "must be ROLE_DSL, ROLE_SENCO or ROLE_STAFF")),
    }
}

impl From<&SchoolKey> for v1::Key {
    fn from(key: &SchoolKey) -> Self {
        Self {
            key_id: key.key_id().to_string(),
            age_recipient: key.public.age_recipient().to_string(),
            signing_key: key.public.signing_key_bytes().to_vec(),
            label: key.label.clone(),
            roles: key
                .roles
                .iter()
                .map(|r| v1::Role::from(*r) as i32)
                .collect(),
            created_at_ms: key.created_at_ms,
            revoked_at_ms: key.revoked_at_ms.unwrap_or(0),
        }
    }
}

impl TryFrom<&v1::Key> for SchoolKey {
    type Error = WireError;
    fn try_from(key: &v1::Key) -> Result<Self, WireError> {
        let public = PublicKey::new(&key.age_recipient, &key.signing_key).map_err(|e| match e {
            crate::keys::KeyError::Recipient => wire("key.age_recipient", e),
            _ => wire("key.signing_key", e),
        })?;
        if !key.key_id.is_empty() && key_id("key.key_id", &key.key_id)? != public.key_id() {
            return Err(wire("key.key_id", "does not match the key's fingerprint"));
        }
        let mut roles = key
            .roles
            .iter()
            .map(|r| role("key.roles", *r))
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(wire("key.roles", "a key needs at least one role"));
        }
        if key.label.chars().count() > 200 || key.label.chars().any(char::is_control) {
            return Err(wire(
                "key.label",
                "at most 200 characters, no control characters",
            ));
        }
        Ok(Self {
            public,
            label: key.label.clone(),
            roles,
            created_at_ms: key.created_at_ms,
            revoked_at_ms: (key.revoked_at_ms != 0).then_some(key.revoked_at_ms),
        })
    }
}

impl From<&SignedHeader> for v1::PackHeader {
    fn from(signed: &SignedHeader) -> Self {
        let h = signed.header();
        Self {
            format_version: h.format_version,
            pack_id: h.pack_id.to_string(),
            from: h.from.to_string(),
            to: h.to.to_string(),
            kind: v1::PackKind::from(h.kind) as i32,
            created_at_ms: h.created_at_ms,
            ciphertext_length: h.ciphertext_len,
            ciphertext_sha256: h.ciphertext_sha256.to_vec(),
            sender_key_id: h.sender_key_id.to_string(),
            recipient_key_ids: h
                .recipient_key_ids
                .iter()
                .map(ToString::to_string)
                .collect(),
            signature: signed.signature().to_vec(),
        }
    }
}

impl TryFrom<&v1::PackHeader> for SignedHeader {
    type Error = WireError;
    fn try_from(h: &v1::PackHeader) -> Result<Self, WireError> {
        let recipient_key_ids = h
            .recipient_key_ids
            .iter()
            .map(|k| key_id("header.recipient_key_ids", k))
            .collect::<Result<Vec<_>, _>>()?;
        if recipient_key_ids.is_empty() {
            return Err(wire("header.recipient_key_ids", "at least one recipient"));
        }
        if !recipient_key_ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(wire(
                "header.recipient_key_ids",
                "must be sorted ascending without duplicates",
            ));
        }
        let header = Header {
            format_version: h.format_version,
            pack_id: h.pack_id.parse().map_err(|e| wire("header.pack_id", e))?,
            from: laestab("header.from", &h.from)?,
            to: laestab("header.to", &h.to)?,
            kind: kind("header.kind", h.kind)?,
            created_at_ms: h.created_at_ms,
            ciphertext_len: h.ciphertext_length,
            ciphertext_sha256: hash32("header.ciphertext_sha256", &h.ciphertext_sha256)?,
            sender_key_id: key_id("header.sender_key_id", &h.sender_key_id)?,
            recipient_key_ids,
        };
        let signature = sig64("header.signature", &h.signature)?;
        SignedHeader::from_parts(header, signature).map_err(|e| wire("header.format_version", e))
    }
}

impl From<&SignedReceipt> for v1::Receipt {
    fn from(signed: &SignedReceipt) -> Self {
        let r = signed.receipt();
        Self {
            pack_id: r.pack_id.to_string(),
            ciphertext_sha256: r.ciphertext_sha256.to_vec(),
            received_at_ms: r.received_at_ms,
            recipient_key_id: r.recipient_key_id.to_string(),
            signature: signed.signature().to_vec(),
        }
    }
}

impl TryFrom<&v1::Receipt> for SignedReceipt {
    type Error = WireError;
    fn try_from(r: &v1::Receipt) -> Result<Self, WireError> {
        let receipt = Receipt {
            pack_id: r.pack_id.parse().map_err(|e| wire("receipt.pack_id", e))?,
            ciphertext_sha256: hash32("receipt.ciphertext_sha256", &r.ciphertext_sha256)?,
            received_at_ms: r.received_at_ms,
            recipient_key_id: key_id("receipt.recipient_key_id", &r.recipient_key_id)?,
        };
        Ok(SignedReceipt::from_parts(
            receipt,
            sig64("receipt.signature", &r.signature)?,
        ))
    }
}

impl From<TransitionRecord> for v1::TransitionRecord {
    fn from(r: TransitionRecord) -> Self {
        Self {
            upn: r.upn,
            former_upn: r.former_upn,
            surname: r.surname,
            forename: r.forename,
            middle_names: r.middle_names,
            preferred_forename: r.preferred_forename,
            dob: r.dob,
            sex: r.sex,
            ethnicity: r.ethnicity,
            first_language: r.first_language,
            fsm: r.fsm,
            medical_flag: r.medical_flag,
            sen_provision: r.sen_provision,
            sen_needs: r.sen_needs,
            attendance: r.attendance.map(|a| v1::Attendance {
                year: a.year,
                possible: a.possible,
                attended: a.attended,
                authorised: a.authorised,
                unauthorised: a.unauthorised,
            }),
            ks2: r.ks2.map(|k| v1::Ks2Results {
                reading: k.reading,
                maths: k.maths,
                gps: k.gps,
                writing_ta: k.writing_ta,
                mtc: k.mtc,
            }),
            safeguarding_file: r.safeguarding_file,
            notes: r.notes,
        }
    }
}

impl From<v1::TransitionRecord> for TransitionRecord {
    fn from(r: v1::TransitionRecord) -> Self {
        Self {
            upn: r.upn,
            former_upn: r.former_upn,
            surname: r.surname,
            forename: r.forename,
            middle_names: r.middle_names,
            preferred_forename: r.preferred_forename,
            dob: r.dob,
            sex: r.sex,
            ethnicity: r.ethnicity,
            first_language: r.first_language,
            fsm: r.fsm,
            medical_flag: r.medical_flag,
            sen_provision: r.sen_provision,
            sen_needs: r.sen_needs,
            attendance: r.attendance.map(|a| Attendance {
                year: a.year,
                possible: a.possible,
                attended: a.attended,
                authorised: a.authorised,
                unauthorised: a.unauthorised,
            }),
            ks2: r.ks2.map(|k| Ks2Results {
                reading: k.reading,
                maths: k.maths,
                gps: k.gps,
                writing_ta: k.writing_ta,
                mtc: k.mtc,
            }),
            safeguarding_file: r.safeguarding_file,
            notes: r.notes,
        }
    }
}

impl From<Manifest> for v1::Manifest {
    fn from(m: Manifest) -> Self {
        Self {
            record: Some(m.record.into()),
            ctf_pupil_xml: m.ctf_pupil_xml,
            attachments: m
                .attachments
                .into_iter()
                .map(|a| v1::Attachment {
                    name: a.name,
                    media_type: a.media_type,
                    size: a.size,
                    sha256: a.sha256.to_vec(),
                })
                .collect(),
        }
    }
}

impl TryFrom<v1::Manifest> for Manifest {
    type Error = WireError;
    fn try_from(m: v1::Manifest) -> Result<Self, WireError> {
        let record = m
            .record
            .ok_or_else(|| wire("manifest.record", "missing"))?
            .into();
        let attachments = m
            .attachments
            .into_iter()
            .map(|a| {
                Ok(AttachmentMeta {
                    sha256: hash32("manifest.attachments.sha256", &a.sha256)?,
                    name: a.name,
                    media_type: a.media_type,
                    size: a.size,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(Self {
            record,
            ctf_pupil_xml: m.ctf_pupil_xml,
            attachments,
        })
    }
}
