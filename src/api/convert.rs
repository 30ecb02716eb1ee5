//! Checking wire fields. Everything that arrives over the network becomes a
//! domain value once, in the `TryFrom` impls beside each domain type
//! (`keys`, `pack::wire`, `record::wire`), and a failure names the field
//! that is wrong: [`WireError`] and the field checks they share are here.

use crate::Laestab;

/// A wire message that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct WireError {
    /// The proto field at fault, e.g. `header.to`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// A [`WireError`] for `field`.
pub(crate) fn wire(field: &'static str, problem: impl ToString) -> WireError {
    WireError {
        field,
        problem: problem.to_string(),
    }
}

/// A 32-byte hash field.
pub(crate) fn hash32(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], WireError> {
    bytes
        .try_into()
        .map_err(|_| wire(field, "must be 32 bytes"))
}

/// A 64-byte signature field.
pub(crate) fn sig64(field: &'static str, bytes: &[u8]) -> Result<[u8; 64], WireError> {
    bytes
        .try_into()
        .map_err(|_| wire(field, "must be a 64-byte Ed25519 signature"))
}

/// Parses a LAESTAB field.
pub fn laestab(field: &'static str, text: &str) -> Result<Laestab, WireError> {
    Laestab::parse_address(text).map_err(|e| wire(field, e))
}
