//! The pack's values on the wire: kind, signed header and receipt, and (with
//! feature `records`) the manifest sealed inside a pack. Each `TryFrom`
//! checks what arrived and names the field that is wrong.

use super::{Header, Kind, PackError, Recall, Receipt, SignedHeader, SignedRecall, SignedReceipt};
use crate::api::convert::{hash32, laestab, sig64, wire};
use crate::api::{WireError, v1};
use crate::keys::parse_key_id;

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
            left_on: h.left_on.map(crate::dates::format_ymd).unwrap_or_default(),
            supersedes: h.supersedes.map(|id| id.to_string()).unwrap_or_default(),
            forwarded: h.forwarded.as_ref().map(|f| {
                Box::new(v1::Forwarded {
                    original: Some(Box::new(v1::PackHeader::from(f.original.as_ref()))),
                    original_age_header: f.original_age_header.clone(),
                })
            }),
        }
    }
}

impl TryFrom<&v1::PackHeader> for SignedHeader {
    type Error = WireError;
    fn try_from(h: &v1::PackHeader) -> Result<Self, WireError> {
        let recipient_key_ids = h
            .recipient_key_ids
            .iter()
            .map(|k| parse_key_id("header.recipient_key_ids", k))
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
            sender_key_id: parse_key_id("header.sender_key_id", &h.sender_key_id)?,
            recipient_key_ids,
            left_on: if h.left_on.is_empty() {
                None
            } else {
                Some(crate::dates::parse_ymd(&h.left_on).map_err(|e| wire("header.left_on", e))?)
            },
            supersedes: if h.supersedes.is_empty() {
                None
            } else {
                Some(
                    h.supersedes
                        .parse()
                        .map_err(|e| wire("header.supersedes", e))?,
                )
            },
            forwarded: match &h.forwarded {
                None => None,
                Some(f) => {
                    let original = f
                        .original
                        .as_deref()
                        .ok_or_else(|| wire("header.forwarded.original", "missing"))?;
                    // One level only: a forwarded pack is not forwarded again.
                    if original.forwarded.is_some() {
                        return Err(wire(
                            "header.forwarded.original.forwarded",
                            PackError::ForwardedTwice,
                        ));
                    }
                    Some(super::Forwarded {
                        original: Box::new(SignedHeader::try_from(original)?),
                        original_age_header: f.original_age_header.clone(),
                    })
                }
            },
        };
        let signature = sig64("header.signature", &h.signature)?;
        SignedHeader::from_parts(header, signature).map_err(|e| match e {
            PackError::LeftOn(_) => wire("header.left_on", e),
            PackError::Supersedes(_) | PackError::SupersedesItself => wire("header.supersedes", e),
            PackError::ForwardedTwice => wire("header.forwarded", e),
            _ => wire("header.format_version", e),
        })
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
            recipient_key_id: parse_key_id("receipt.recipient_key_id", &r.recipient_key_id)?,
        };
        Ok(SignedReceipt::from_parts(
            receipt,
            sig64("receipt.signature", &r.signature)?,
        ))
    }
}

impl From<&SignedRecall> for v1::Recall {
    fn from(signed: &SignedRecall) -> Self {
        let r = signed.recall();
        Self {
            pack_id: r.pack_id.to_string(),
            ciphertext_sha256: r.ciphertext_sha256.to_vec(),
            recalled_at_ms: r.recalled_at_ms,
            signer_key_id: r.signer_key_id.to_string(),
            reason: r.reason.clone(),
            signature: signed.signature().to_vec(),
        }
    }
}

impl TryFrom<&v1::Recall> for SignedRecall {
    type Error = WireError;
    fn try_from(r: &v1::Recall) -> Result<Self, WireError> {
        let recall = Recall {
            pack_id: r.pack_id.parse().map_err(|e| wire("recall.pack_id", e))?,
            ciphertext_sha256: hash32("recall.ciphertext_sha256", &r.ciphertext_sha256)?,
            recalled_at_ms: r.recalled_at_ms,
            signer_key_id: parse_key_id("recall.signer_key_id", &r.signer_key_id)?,
            reason: r.reason.clone(),
        };
        SignedRecall::from_parts(recall, sig64("recall.signature", &r.signature)?)
            .map_err(|e| wire("recall.reason", e))
    }
}

#[cfg(feature = "records")]
mod manifest {
    use super::super::{AttachmentMeta, Manifest};
    use crate::api::convert::{hash32, wire};
    use crate::api::{WireError, v1};

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
}
