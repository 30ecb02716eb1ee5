//! Secrets a school holds and the server only hashes: API tokens and
//! one-time enrolment codes; and finding the calling school from the
//! `authorization: Bearer <token>` metadata of a request.

use baton::Laestab;
use baton::keys::{KeyId, Role};
use baton::pack::Kind;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::app::App;
use crate::cache::View;
use crate::store::{Store, TokenHolder};

/// Every API token starts with this, so a leaked one is easy to spot.
pub const TOKEN_PREFIX: &str = "bt_";

/// Letters of enrolment codes: no 0/O, 1/I/L to misread.
const CODE_ALPHABET: &[u8; 31] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// SHA-256 of a secret, the only form stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A fresh API token (256 random bits) and its hash.
pub fn new_token() -> (String, [u8; 32]) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_secret(&token);
    (token, hash)
}

/// Normalises a typed enrolment code: upper case, no dashes or spaces.
pub fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// A fresh enrolment code (24 characters of 31, about 119 bits), grouped in
/// fours for reading aloud, and the hash of its normalised form.
pub fn new_code() -> (String, [u8; 32]) {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let letters: Vec<char> = (0..24)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect();
    let code = letters
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-");
    let hash = hash_secret(&normalise_code(&code));
    (code, hash)
}

/// The school whose token authorises `request`, or `Unauthenticated`.
pub async fn caller<S: Store, T>(app: &App<S>, request: &Request<T>) -> Result<Laestab, Status> {
    Ok(authenticate(app, request).await?.0.school)
}

/// Who holds the calling token and the directory as of this call, for the
/// call's further look-ups.
pub async fn authenticate<'a, S: Store, T>(
    app: &'a App<S>,
    request: &Request<T>,
) -> Result<(TokenHolder, View<'a, S>), Status> {
    let addr = request.remote_addr().map(|a| a.ip());
    app.token_attempts.check(addr)?;
    let token_hash = bearer(request)?;
    let view = app.directory.view(&app.store).await.map_err(unavailable)?;
    match holder_for(&view, token_hash).await {
        Ok(holder) => Ok((holder, view)),
        Err(refused) => {
            if refused.code() == tonic::Code::Unauthenticated {
                app.token_attempts.failed(addr);
                // The event names no token: only that one was refused.
                let event = crate::audit::Event::by_address(addr, "auth.refused", "token");
                if let Err(e) = app.store.record(event).await {
                    tracing::error!(error = %e, "auditing a refused token failed");
                }
            }
            Err(refused)
        }
    }
}

/// The hash of the bearer token in `request`'s metadata.
pub fn bearer<T>(request: &Request<T>) -> Result<[u8; 32], Status> {
    let value = request.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
    })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX))
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer bt_…`"))?;
    Ok(hash_secret(token))
}

/// The calling key holder: school, the key its token was issued with, and
/// that key's roles (none for a token with no key).
#[derive(Debug, Clone)]
pub struct KeyHolder {
    /// The school.
    pub school: Laestab,
    /// The key the token was issued with.
    pub key_id: Option<KeyId>,
    /// The key's roles.
    pub roles: Vec<Role>,
}

impl KeyHolder {
    /// Whether packs of `kind` are for this key holder to see: a
    /// child-protection file only for the school's DSL keys.
    pub fn may_see(&self, kind: Kind) -> bool {
        kind != Kind::Safeguarding || self.roles.contains(&Role::Dsl)
    }
}

/// The calling key holder (see [`KeyHolder`]) and the directory as of this
/// call.
pub async fn key_holder<'a, S: Store, T>(
    app: &'a App<S>,
    request: &Request<T>,
) -> Result<(KeyHolder, View<'a, S>), Status> {
    let (holder, view) = authenticate(app, request).await?;
    let holder = with_roles(&view, holder).await?;
    Ok((holder, view))
}

/// The token holder with its key's roles, as `view` lists them.
async fn with_roles<S: Store>(
    view: &View<'_, S>,
    holder: TokenHolder,
) -> Result<KeyHolder, Status> {
    let roles = match holder.key_id {
        None => Vec::new(),
        Some(key_id) => view
            .school(&holder.school)
            .await
            .map_err(unavailable)?
            .and_then(|s| s.keys.iter().find(|k| k.key_id() == key_id).cloned())
            .map(|k| k.roles)
            .unwrap_or_default(),
    };
    Ok(KeyHolder {
        school: holder.school,
        key_id: holder.key_id,
        roles,
    })
}

/// The calling key holder as the directory cache last saw it, and that
/// directory version, without reading the version now: for a call whose
/// one statement reads the version itself and stands only if it is still
/// this one (so a token revoked meanwhile is refused as at once). `None`
/// when the cache cannot vouch for the token: the caller then
/// authenticates with [`key_holder`], which reads the version and audits
/// a refusal.
pub async fn key_holder_as_last_seen<S: Store, T>(
    app: &App<S>,
    request: &Request<T>,
) -> Result<Option<(KeyHolder, i64)>, Status> {
    app.token_attempts
        .check(request.remote_addr().map(|a| a.ip()))?;
    let token_hash = bearer(request)?;
    let view = app.directory.cached_view(&app.store);
    let Ok(holder) = holder_for(&view, token_hash).await else {
        return Ok(None);
    };
    Ok(Some((with_roles(&view, holder).await?, view.version())))
}

/// Who holds the token that hashes to `token_hash`, in `view`.
pub async fn holder_for<S: Store>(
    view: &View<'_, S>,
    token_hash: [u8; 32],
) -> Result<TokenHolder, Status> {
    match view.token_holder(token_hash).await {
        Ok(Some(holder)) => Ok(holder),
        Ok(None) => Err(Status::unauthenticated("unknown or revoked token")),
        Err(e) => Err(unavailable(e)),
    }
}

/// Checks that the token hashing to `token_hash` still authorises calls
/// (for long streams, which authenticate once at the start).
pub async fn still_valid<S: Store>(app: &App<S>, token_hash: [u8; 32]) -> Result<(), Status> {
    let view = app.directory.view(&app.store).await.map_err(unavailable)?;
    match holder_for(&view, token_hash).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::Unauthenticated => Err(Status::unauthenticated(
            "the token was revoked (or its key was)",
        )),
        Err(s) => Err(s),
    }
}

fn unavailable(e: crate::store::StoreError) -> Status {
    tracing::error!(error = %e, "token lookup failed");
    Status::unavailable("storage unavailable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_normalise_to_their_hash() {
        let (code, hash) = new_code();
        assert_eq!(hash_secret(&normalise_code(&code.to_lowercase())), hash);
        assert_eq!(normalise_code(&code).len(), 24);
    }

    #[test]
    fn tokens_are_prefixed_and_long() {
        let (token, hash) = new_token();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), 3 + 64);
        assert_eq!(hash_secret(&token), hash);
    }
}
