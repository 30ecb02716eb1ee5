//! `baton.v1.Directory`: who is enrolled and their keys; a school manages
//! only its own keys.

use std::sync::Arc;

use baton::api::v1;
use baton::api::v1::directory_server::Directory;
use tonic::{Request, Response, Status};

use super::wire::{new_key, parse_laestab, school_message, store_status, wire_status};
use crate::app::App;
use crate::audit::Event;
use crate::auth;
use baton::keys::Role;
use baton::trust::{Revocation, RevokedBy, revocation_statement, signature_bytes};

use crate::store::{Store, now_ms};

/// The directory service.
pub struct Service<S> {
    app: Arc<App<S>>,
}

impl<S: Store> Service<S> {
    /// The service over shared state.
    pub fn new(app: Arc<App<S>>) -> Self {
        Self { app }
    }
}

/// Roles for a message: `dsl, staff`.
fn roles_list(roles: &[Role]) -> String {
    if roles.is_empty() {
        return "(none)".into();
    }
    baton::keys::role_names(roles, ", ")
}

/// A school as `peer` lists it, or with an escrow code that peer's escrow
/// (`GetSchoolRequest.peer`).
async fn as_peer_lists<S: Store>(
    store: &S,
    peer: &str,
    laestab: &baton::Laestab,
) -> Result<v1::School, Status> {
    use crate::federation::directory::{peer_escrow, peer_school};
    let found = if laestab.is_escrow() {
        peer_escrow(store, peer).await
    } else {
        peer_school(store, laestab)
            .await
            .map(|s| s.filter(|s| s.peer == peer))
    };
    found.map_err(store_status)?.ok_or_else(|| {
        Status::not_found(if laestab.is_escrow() {
            format!("no peer {peer:?} listing an escrow")
        } else {
            format!("no peer {peer:?} listing school {laestab}")
        })
    })
}

fn own_school(caller: &baton::Laestab, asked: &baton::Laestab) -> Result<(), Status> {
    if caller == asked {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "a school manages only its own keys: you are {caller}, not {asked}"
        )))
    }
}

/// How far a signed revocation time may be from the server's clock.
const REVOCATION_SKEW_MS: i64 = 5 * 60 * 1000;

impl<S: Store> Service<S> {
    /// The revocation's time and signature: the caller's signed one,
    /// checked against the caller's own key, or now and unsigned.
    async fn signed_revocation(
        &self,
        holder: &auth::KeyHolder,
        laestab: &baton::Laestab,
        key_id: baton::keys::KeyId,
        req: &v1::RevokeKeyRequest,
    ) -> Result<(i64, Option<Revocation>), Status> {
        let now = now_ms();
        let Some(signature) = signature_bytes(&req.signature)
            .map_err(|e| Status::invalid_argument(format!("field `signature`: {e}")))?
        else {
            return Ok((now, None));
        };
        if req.revoked_at_ms.abs_diff(now) > REVOCATION_SKEW_MS as u64 {
            return Err(Status::invalid_argument(
                "field `revoked_at_ms`: more than five minutes from the server's clock; check this computer's clock",
            ));
        }
        let signer = holder.key_id.ok_or_else(|| {
            Status::failed_precondition(
                "this token was issued before tokens had keys: it cannot sign a revocation",
            )
        })?;
        let school = self
            .app
            .store
            .school(laestab)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("school {laestab} is not enrolled")))?;
        let key = school
            .keys
            .iter()
            .find(|k| k.key_id() == signer)
            .ok_or_else(|| Status::failed_precondition("the caller's key is not listed"))?;
        key.public
            .verify(
                &revocation_statement(laestab, key_id, req.revoked_at_ms),
                &signature,
            )
            .map_err(|e| Status::invalid_argument(format!("field `signature`: {e}")))?;
        Ok((
            req.revoked_at_ms,
            Some(Revocation {
                by: RevokedBy::Key(signer),
                signature,
            }),
        ))
    }
}

impl<S: Store> Service<S> {
    /// The peers' schools that may be listed beside `local` (see
    /// [`crate::federation::directory::merge`]).
    async fn peer_schools(
        &self,
        local: &[crate::store::School],
    ) -> Result<Vec<v1::School>, Status> {
        let stored = self.app.store.peer_schools().await.map_err(store_status)?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let numbers = crate::federation::directory::local_numbers(local);
        Ok(crate::federation::directory::merge(&numbers, &stored).0)
    }
}

#[tonic::async_trait]
impl<S: Store> Directory for Service<S> {
    async fn list_schools(
        &self,
        request: Request<v1::ListSchoolsRequest>,
    ) -> Result<Response<v1::ListSchoolsResponse>, Status> {
        let caller = auth::caller(&self.app, &request).await?;
        let schools = self.app.store.list_schools().await.map_err(store_status)?;
        let peers = self.peer_schools(&schools).await?;
        self.app
            .store
            .record(Event::by_school(&caller, "directory.list", caller))
            .await
            .map_err(store_status)?;
        let mut schools: Vec<v1::School> =
            schools.iter().map(|s| school_message(s, true)).collect();
        // Each with its active keys, as this trust's schools are listed
        // (`GetSchool` gives every key).
        schools.extend(peers.into_iter().map(|mut s| {
            s.keys.retain(|k| k.revoked_at_ms == 0);
            s
        }));
        schools.sort_by(|a, b| a.laestab.cmp(&b.laestab));
        Ok(Response::new(v1::ListSchoolsResponse { schools }))
    }

    async fn get_school(
        &self,
        request: Request<v1::GetSchoolRequest>,
    ) -> Result<Response<v1::School>, Status> {
        let caller = auth::caller(&self.app, &request).await?;
        let laestab = parse_laestab("laestab", &request.get_ref().laestab)?;
        let peer = request.get_ref().peer.as_str();
        let school = if !peer.is_empty() {
            as_peer_lists(&self.app.store, peer, &laestab).await?
        } else {
            match self
                .app
                .store
                .school(&laestab)
                .await
                .map_err(store_status)?
            {
                Some(school) => school_message(&school, false),
                None => crate::federation::directory::peer_school(&self.app.store, &laestab)
                    .await
                    .map_err(store_status)?
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "school {laestab} is not enrolled here nor at a peer"
                        ))
                    })?,
            }
        };
        self.app
            .store
            .record(Event::by_school(&caller, "school.get", laestab))
            .await
            .map_err(store_status)?;
        Ok(Response::new(school))
    }

    async fn add_key(
        &self,
        request: Request<v1::AddKeyRequest>,
    ) -> Result<Response<v1::Key>, Status> {
        let (holder, _) = auth::key_holder(&self.app, &request).await?;
        let caller = holder.school;
        let req = request.into_inner();
        let laestab = parse_laestab("laestab", &req.laestab)?;
        own_school(&caller, &laestab)?;
        let key = new_key(&laestab, req.key.as_ref(), &req.proof, false)?;
        let held = &holder.roles;
        if let Some(missing) = key.roles.iter().find(|r| !held.contains(r)) {
            return Err(Status::permission_denied(format!(
                "your key holds the role(s) {}: it may not grant {missing}; the trust's operator issues codes for other roles",
                roles_list(held)
            )));
        }
        let event = Event::by_school(
            &caller,
            "key.add",
            format!("{} roles={}", key.key_id(), roles_list(&key.roles)),
        );
        self.app
            .store
            .add_key(&laestab, &key, event)
            .await
            .map_err(store_status)?;
        tracing::info!(school = %laestab, key = %key.key_id(), "key added");
        Ok(Response::new(v1::Key::from(&key)))
    }

    async fn revoke_key(
        &self,
        request: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::Key>, Status> {
        let (holder, _) = auth::key_holder(&self.app, &request).await?;
        let caller = holder.school;
        let req = request.into_inner();
        let laestab = parse_laestab("laestab", &req.laestab)?;
        own_school(&caller, &laestab)?;
        let key_id = baton::keys::parse_key_id("key_id", &req.key_id).map_err(wire_status)?;
        let own = holder.key_id == Some(key_id);
        if !own && !holder.roles.contains(&Role::Dsl) {
            return Err(Status::permission_denied(
                "a key without the dsl role may revoke only itself; the school's DSL or the trust's operator revokes other keys",
            ));
        }
        let (at_ms, revocation) = self
            .signed_revocation(&holder, &laestab, key_id, &req)
            .await?;
        let signed = if revocation.is_some() { " signed" } else { "" };
        let event = Event::by_school(&caller, "key.revoke", format!("{key_id}{signed}"));
        let key = self
            .app
            .store
            .revoke_key(&laestab, key_id, at_ms, revocation, event)
            .await
            .map_err(store_status)?;
        tracing::info!(school = %laestab, key = %key_id, "key revoked");
        Ok(Response::new(v1::Key::from(&key)))
    }
}
