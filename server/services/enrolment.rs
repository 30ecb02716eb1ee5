//! `baton.v1.Enrolment`: a school redeems its one-time code, registers its
//! first key (proving it holds the private half) and receives its token.

use std::sync::Arc;

use baton::api::v1;
use baton::api::v1::enrolment_server::Enrolment;
use baton::keys::{SchoolKey, enrol_statement};
use tonic::{Request, Response, Status};

use super::{App, parse_laestab, store_status, wire_status};
use crate::audit::Event;
use crate::auth;
use crate::store::{Store, StoreError, now_ms};

/// The enrolment service.
pub struct Service<S> {
    app: Arc<App<S>>,
}

impl<S: Store> Service<S> {
    /// The service over shared state.
    pub fn new(app: Arc<App<S>>) -> Self {
        Self { app }
    }
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
    }
}

/// Checks a new key's proof of possession and stamps its creation time.
pub fn new_key(
    laestab: &baton::Laestab,
    key: Option<&v1::Key>,
    proof: &[u8],
) -> Result<SchoolKey, Status> {
    let key = key.ok_or_else(|| Status::invalid_argument("field `key`: missing"))?;
    let mut key = SchoolKey::try_from(key).map_err(wire_status)?;
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

#[tonic::async_trait]
impl<S: Store> Enrolment for Service<S> {
    async fn redeem(
        &self,
        request: Request<v1::RedeemRequest>,
    ) -> Result<Response<v1::RedeemResponse>, Status> {
        let req = request.into_inner();
        let laestab = parse_laestab("laestab", &req.laestab)?;
        let key = new_key(&laestab, req.key.as_ref(), &req.proof)?;
        let code_hash = auth::hash_secret(&auth::normalise_code(&req.code));
        let (token, token_hash) = auth::new_token();
        let event = Event::by_school(&laestab, "school.enrol", key.key_id());
        let school = self
            .app
            .store
            .redeem(
                &laestab,
                code_hash,
                &key,
                token_hash,
                key.created_at_ms,
                event,
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    Status::already_exists("field `key`: this key is already registered")
                }
                other => store_status(other),
            })?;
        tracing::info!(school = %laestab, key = %key.key_id(), "school enrolled");
        Ok(Response::new(v1::RedeemResponse {
            token,
            school: Some(school_message(&school, true)),
        }))
    }
}
