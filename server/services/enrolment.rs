//! `baton.v1.Enrolment`: a school redeems its one-time code, registers its
//! first key (proving it holds the private half) and receives its token.

use std::sync::Arc;

use baton::api::v1;
use baton::api::v1::enrolment_server::Enrolment;
use tonic::{Request, Response, Status};

use super::wire::{new_key, parse_laestab, school_message, store_status};
use crate::app::App;
use crate::audit::Event;
use crate::auth;
use crate::store::{Store, StoreError};

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

#[tonic::async_trait]
impl<S: Store> Enrolment for Service<S> {
    async fn redeem(
        &self,
        request: Request<v1::RedeemRequest>,
    ) -> Result<Response<v1::RedeemResponse>, Status> {
        let addr = request.remote_addr().map(|a| a.ip());
        self.app.redeem_attempts.check(addr)?;
        let req = request.into_inner();
        let laestab = parse_laestab("laestab", &req.laestab)?;
        let key = new_key(&laestab, req.key.as_ref(), &req.proof, true)?;
        let code_hash = auth::hash_secret(&auth::normalise_code(&req.code));
        let (token, token_hash) = auth::new_token();
        let event = Event::by_school(
            &laestab,
            "school.enrol",
            format!(
                "{} roles={}",
                key.key_id(),
                if key.roles.is_empty() {
                    "(the code's)".to_string()
                } else {
                    baton::keys::role_names(&key.roles, ",")
                }
            ),
        );
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
            });
        let school = match school {
            Ok(school) => school,
            Err(refused) => {
                if refused.code() == tonic::Code::PermissionDenied {
                    // A wrong code (or a role it does not grant): counted
                    // against the address, and audited without the code.
                    self.app.redeem_attempts.failed(addr);
                    let event = Event::by_address(addr, "enrol.refused", laestab);
                    if let Err(e) = self.app.store.record(event).await {
                        tracing::error!(error = %e, "auditing a refused enrolment failed");
                    }
                }
                return Err(refused);
            }
        };
        tracing::info!(school = %laestab, key = %key.key_id(), "key enrolled");
        Ok(Response::new(v1::RedeemResponse {
            token,
            school: Some(school_message(&school, true)),
        }))
    }
}
