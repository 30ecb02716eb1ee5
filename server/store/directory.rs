//! The directory: schools, their keys, the API tokens of their key holders
//! and the one-time enrolment codes that create both.

use std::future::Future;

use baton::Laestab;
use baton::keys::{KeyId, Role, SchoolKey};
use baton::trust::Revocation;

use super::error::Result;
use crate::audit;

/// A school as the operator enrolled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchool {
    /// The school's LAESTAB.
    pub laestab: Laestab,
    /// Its name.
    pub name: String,
    /// Phase of education.
    pub phase: String,
    /// URN, empty when unknown.
    pub urn: String,
}

/// An enrolled school with its keys (active and revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct School {
    /// Name, phase, URN and LAESTAB.
    pub info: NewSchool,
    /// When it was enrolled.
    pub created_at_ms: i64,
    /// Every key, active and revoked, in key id order.
    pub keys: Vec<SchoolKey>,
    /// Its former numbers, which still route to it, in order.
    pub aliases: Vec<Laestab>,
}

/// Who holds a token: its school and the key it was issued with (`None`
/// only for a token whose school had no key when tokens gained keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHolder {
    /// The school.
    pub school: Laestab,
    /// The key the token was issued with.
    pub key_id: Option<KeyId>,
}

/// The directory version (see [`Directory::directory_version`]); the same
/// SQL on both backends.
pub const DIRECTORY_VERSION_SQL: &str = "SELECT version FROM directory_version WHERE id = 1";

/// Schools, keys, tokens and enrolment codes. Every mutating call appends
/// its audit event in the same transaction.
pub trait Directory: Send + Sync {
    /// Enrols a school with a one-time code (hash only) granting `roles`,
    /// valid until `expires_at_ms`.
    #[allow(clippy::too_many_arguments)]
    fn add_school(
        &self,
        school: &NewSchool,
        code_hash: [u8; 32],
        roles: &[Role],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Issues another one-time code, granting `roles`, for an enrolled
    /// school, so a further key holder (another device, the DSL) can enrol.
    /// `NotFound` if not enrolled.
    #[allow(clippy::too_many_arguments)]
    fn issue_code(
        &self,
        laestab: &Laestab,
        code_hash: [u8; 32],
        roles: &[Role],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every school with all its keys, by LAESTAB.
    fn list_schools(&self) -> impl Future<Output = Result<Vec<School>>> + Send;

    /// One school with all its keys, by its LAESTAB or a former one.
    fn school(&self, laestab: &Laestab) -> impl Future<Output = Result<Option<School>>> + Send;

    /// Moves school `old` to number `new` (an academy conversion): its
    /// keys, tokens, codes, packs and calendar go with it, `old` becomes an
    /// alias that routes to it, and `name` (if given) replaces its name.
    /// `NotFound` if `old` is not a school's current number, `Conflict` if
    /// `new` is a school's number or alias already.
    fn renumber(
        &self,
        old: &Laestab,
        new: &Laestab,
        name: Option<&str>,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Redeems a code: registers the key, marks the code used and stores
    /// the hash of the key holder's token, bound to that key, all at once.
    /// The key holds the roles it asks for, which must be among the code's
    /// ([`StoreError::RolesNotGranted`](super::StoreError) otherwise, and the
    /// code stays unused), or the code's roles when it asks for none.
    fn redeem(
        &self,
        laestab: &Laestab,
        code_hash: [u8; 32],
        key: &SchoolKey,
        token_hash: [u8; 32],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<School>> + Send;

    /// Registers another key for a school.
    fn add_key(
        &self,
        laestab: &Laestab,
        key: &SchoolKey,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Revokes a key of a school at `now_ms` (idempotent: a key revoked
    /// before keeps its first time and signature) and, in the same
    /// transaction, the token issued with it; returns the key.
    fn revoke_key(
        &self,
        laestab: &Laestab,
        key_id: KeyId,
        now_ms: i64,
        revocation: Option<Revocation>,
        event: audit::Event,
    ) -> impl Future<Output = Result<SchoolKey>> + Send;

    /// Stores the trust directory key's endorsement of a key (checked by
    /// the caller). `NotFound` if the school has no such key.
    fn endorse_key(
        &self,
        laestab: &Laestab,
        key_id: KeyId,
        endorsement: [u8; 64],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// A number that changes whenever any school, key or token changes
    /// (by any process or node), so a cache of them can tell it is current.
    fn directory_version(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Who holds an active token: the token is not revoked and neither is
    /// the key it was issued with.
    fn token_holder(
        &self,
        token_hash: [u8; 32],
    ) -> impl Future<Output = Result<Option<TokenHolder>>> + Send;

    /// Revokes every token of a school; returns how many.
    fn revoke_tokens(
        &self,
        laestab: &Laestab,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<u64>> + Send;
}
