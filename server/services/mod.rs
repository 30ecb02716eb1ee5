//! The gRPC services over a [`Store`]: shared state, the mapping from store
//! errors and wire errors to status codes, and the router with health and
//! reflection.

pub mod directory;
pub mod enrolment;
pub mod exchange;

use std::sync::Arc;
use std::time::Duration;

use baton::Laestab;
use baton::api::{WireError, v1};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::server::Router;

use crate::cache::DirectoryCache;
use crate::store::{Store, StoreError};

/// Largest gRPC message either side may send or receive.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 flow-control window of one stream (one upload).
const STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// HTTP/2 flow-control window of one connection (all its streams).
const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;

/// What every service shares.
pub struct App<S> {
    /// Persistent state.
    pub store: S,
    /// Schools, keys and tokens, as of the store's directory version.
    pub directory: DirectoryCache,
    /// Largest pack accepted, bytes of ciphertext.
    pub max_pack_bytes: u64,
    /// Cancelled when the daemon shuts down, to end long streams.
    pub shutdown: CancellationToken,
    /// Longest wait for the next message of an upload stream; a stalled
    /// (or slowloris) upload is dropped after it.
    pub upload_idle_timeout: Duration,
}

impl<S: Store> App<S> {
    /// Shared state over `store`.
    pub fn new(
        store: S,
        max_pack_bytes: u64,
        shutdown: CancellationToken,
        upload_idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            directory: DirectoryCache::default(),
            max_pack_bytes,
            shutdown,
            upload_idle_timeout,
        })
    }
}

/// A store error as the client should see it; details of internal
/// failures go to the log, not the wire.
pub fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::Conflict(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::BadCode => Status::permission_denied(err.to_string()),
        StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migrate(_) => {
            tracing::error!(error = %err, "storage failure");
            Status::unavailable("storage failure; try again")
        }
    }
}

/// A malformed wire value: `InvalidArgument` naming the field.
pub fn wire_status(err: WireError) -> Status {
    Status::invalid_argument(err.to_string())
}

/// Parses a LAESTAB field or fails with `InvalidArgument`.
pub fn parse_laestab(field: &'static str, text: &str) -> Result<Laestab, Status> {
    baton::api::convert::laestab(field, text).map_err(wire_status)
}

/// All services, health and reflection on one router.
pub async fn router<S: Store>(
    builder: tonic::transport::Server,
    app: Arc<App<S>>,
) -> anyhow::Result<Router> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<v1::enrolment_server::EnrolmentServer<enrolment::Service<S>>>()
        .await;
    health
        .set_serving::<v1::directory_server::DirectoryServer<directory::Service<S>>>()
        .await;
    health
        .set_serving::<v1::exchange_server::ExchangeServer<exchange::Service<S>>>()
        .await;
    // Reflection in both versions: grpcurl and tonic speak v1, Python's
    // grpcio-reflection and older tools only v1alpha. Each lists (and can
    // describe) every service: Baton's, health, and both reflections.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(baton::api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let mut builder = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // Flow-control windows bound what a connection may have in flight
        // before the daemon reads it: with many large uploads at once this,
        // not the pack size, is what the daemon holds per upload.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .tcp_nodelay(true);
    let router = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            v1::enrolment_server::EnrolmentServer::new(enrolment::Service::new(app.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            v1::directory_server::DirectoryServer::new(directory::Service::new(app.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            v1::exchange_server::ExchangeServer::new(exchange::Service::new(app))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    Ok(router)
}
