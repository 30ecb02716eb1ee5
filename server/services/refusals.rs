//! Audits refused calls: every answer `PermissionDenied` (a key asking for
//! what its school or role may not have) is written to the audit log as
//! `call.refused`, naming the caller's address and the method, never the
//! request. A layer around every service, so no refusal is missed;
//! enrolment refusals are audited where they happen (`enrol.refused`), as
//! are unknown tokens (`auth.refused`).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::app::App;
use crate::audit::Event;
use crate::store::Store;

/// `grpc-status` of `PermissionDenied`.
const PERMISSION_DENIED: &str = "7";

/// Wraps a service in [`Refusals`].
pub struct RefusalLayer<S> {
    app: Arc<App<S>>,
}

impl<S> RefusalLayer<S> {
    /// A layer auditing through `app`'s store.
    pub fn new(app: Arc<App<S>>) -> Self {
        Self { app }
    }
}

impl<S> Clone for RefusalLayer<S> {
    fn clone(&self) -> Self {
        Self {
            app: Arc::clone(&self.app),
        }
    }
}

impl<S, Inner> tower_layer::Layer<Inner> for RefusalLayer<S> {
    type Service = Refusals<S, Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        Refusals {
            app: Arc::clone(&self.app),
            inner,
        }
    }
}

/// A service whose `PermissionDenied` answers are audited.
pub struct Refusals<S, Inner> {
    app: Arc<App<S>>,
    inner: Inner,
}

impl<S, Inner: Clone> Clone for Refusals<S, Inner> {
    fn clone(&self) -> Self {
        Self {
            app: Arc::clone(&self.app),
            inner: self.inner.clone(),
        }
    }
}

/// The caller's address, as the transport recorded it.
fn remote<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|t| t.get_ref().remote_addr())
        })
        .map(|a| a.ip())
}

impl<S, Inner, B, RB> tower_service::Service<http::Request<B>> for Refusals<S, Inner>
where
    S: Store,
    Inner: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    Inner::Future: Send + 'static,
{
    type Response = Inner::Response;
    type Error = Inner::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let address = remote(&request);
        let app = Arc::clone(&self.app);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let refused = response
                .headers()
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == PERMISSION_DENIED.as_bytes());
            if refused && !method.starts_with("/baton.v1.Enrolment/") {
                // Off the answer's path: the refusal is not slowed by the log.
                tokio::spawn(async move {
                    let event = Event::by_address(address, "call.refused", method);
                    if let Err(e) = app.store.record(event).await {
                        tracing::error!(error = %e, "could not audit a refused call");
                    }
                });
            }
            Ok(response)
        })
    }
}
