//! The `Federation` gRPC service, served only on the federation listener
//! (mutual TLS): every call first finds which peer's certificate the
//! connection presented ([`PeerVerifier::peer_of`]), so a peer removed
//! while its connection stays open is refused from its next call.

use std::sync::Arc;

use baton::api::v1;
use baton::api::v1::federation_server::Federation;
use tonic::{Request, Response, Status, Streaming};

use super::limits::Limits;
use super::sync::Resync;
use super::tls::PeerVerifier;
use crate::app::App;
use crate::services::wire::{school_message, store_status};
use crate::store::{Store, now_ms};

/// The service over `app`, admitting `verifier`'s peers.
pub struct Service<S> {
    app: Arc<App<S>>,
    verifier: Arc<PeerVerifier>,
    /// Relays from one peer.
    limits: Limits,
    /// Its other calls (receipts, recalls, reports): ten times the rate,
    /// four times the concurrency.
    calls: Limits,
    resync: Arc<Resync>,
}

impl<S> Service<S> {
    /// The service.
    pub fn new(
        app: Arc<App<S>>,
        verifier: Arc<PeerVerifier>,
        limits: Limits,
        resync: Resync,
    ) -> Self {
        let calls = limits.scaled(10, 4);
        Self {
            app,
            verifier,
            limits,
            calls,
            resync: Arc::new(resync),
        }
    }

    /// The name of the calling peer.
    fn caller<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a peer's certificate is required"))?;
        certs
            .first()
            .and_then(|cert| self.verifier.peer_of(cert))
            .ok_or_else(|| Status::permission_denied("not a peer of this daemon"))
    }
}

#[tonic::async_trait]
impl<S: Store> Federation for Service<S> {
    async fn hello(
        &self,
        request: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        let caller = self.caller(&request)?;
        tracing::debug!(peer = %caller, "federation hello");
        Ok(Response::new(v1::HelloResponse {
            daemon_key: self.app.notary.public().to_vec(),
            caller_name: caller,
            now_ms: now_ms(),
        }))
    }

    async fn peer_schools(
        &self,
        request: Request<v1::PeerSchoolsRequest>,
    ) -> Result<Response<v1::PeerSchoolsResponse>, Status> {
        let caller = self.caller(&request)?;
        let schools = self.app.store.list_schools().await.map_err(store_status)?;
        tracing::debug!(peer = %caller, schools = schools.len(), "directory read by a peer");
        // The escrow too: its keys verify what it re-addresses to the
        // peer's schools (the peer never lists it as a destination). Every
        // key, revoked ones with their signed revocations: the peer's
        // schools verify what a key signed before it was revoked, and see
        // a revocation the key or a DSL key signed as no change to confirm.
        // A school (or escrow) with no active key yet (its code not yet
        // redeemed) can receive nothing: not listed until it has one.
        Ok(Response::new(v1::PeerSchoolsResponse {
            schools: schools
                .iter()
                .filter(|s| s.keys.iter().any(baton::keys::SchoolKey::is_active))
                .map(|s| school_message(s, false))
                .collect(),
        }))
    }

    async fn relay(
        &self,
        request: Request<Streaming<v1::RelayMessage>>,
    ) -> Result<Response<v1::RelayReceipt>, Status> {
        let caller = self.caller(&request)?;
        let permit = self.limits.admit(&caller)?;
        let app = self.app.clone();
        let quota = self.limits.quota_bytes();
        let resync = self.resync.clone();
        let stream = request.into_inner();
        // In a task of its own, so a peer going away mid-stream still runs
        // the clean-up of what it staged.
        let task = tokio::spawn(async move {
            let _permit = permit;
            super::inbound::relay(&app, &caller, &resync, quota, stream).await
        });
        let receipt = task
            .await
            .map_err(|_| Status::internal("relay task failed"))??;
        Ok(Response::new(receipt))
    }

    async fn return_receipt(
        &self,
        request: Request<v1::ReturnReceiptRequest>,
    ) -> Result<Response<v1::ReturnReceiptResponse>, Status> {
        let caller = self.caller(&request)?;
        let _permit = self.calls.admit(&caller)?;
        let receipt = request
            .get_ref()
            .receipt
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("field `receipt`: missing"))?;
        let at = super::inbound::return_receipt(&self.app, &caller, receipt).await?;
        Ok(Response::new(v1::ReturnReceiptResponse {
            acknowledged_at_ms: at,
        }))
    }

    async fn relay_recall(
        &self,
        request: Request<v1::RelayRecallRequest>,
    ) -> Result<Response<v1::RelayRecallResponse>, Status> {
        let caller = self.caller(&request)?;
        let _permit = self.calls.admit(&caller)?;
        let recall = request
            .get_ref()
            .recall
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("field `recall`: missing"))?;
        let state = super::inbound::relay_recall(&self.app, &caller, recall).await?;
        Ok(Response::new(v1::RelayRecallResponse {
            state: state as i32,
        }))
    }

    async fn report_state(
        &self,
        request: Request<v1::ReportStateRequest>,
    ) -> Result<Response<v1::ReportStateResponse>, Status> {
        let caller = self.caller(&request)?;
        let _permit = self.calls.admit(&caller)?;
        super::inbound::report_state(&self.app, &caller, request.get_ref()).await?;
        Ok(Response::new(v1::ReportStateResponse {}))
    }
}
