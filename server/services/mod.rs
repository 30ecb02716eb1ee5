//! The gRPC services over a [`Store`], and the router that serves them with
//! health and reflection. What they share is [`App`]; how store values and
//! errors meet the wire is [`wire`].

pub mod directory;
pub mod enrolment;
pub mod exchange;
pub mod refusals;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use baton::api::v1;
use tonic::transport::server::Router;
use tower_layer::{Identity, Stack};

use refusals::RefusalLayer;

use crate::metrics::grpc::{GrpcMetricsLayer, Methods};

use crate::app::App;
use crate::store::Store;

/// Largest gRPC message either side may send or receive.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 flow-control window of one stream (one upload).
pub(crate) const STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// HTTP/2 flow-control window of one connection (all its streams).
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;

/// Largest HTTP/2 frame a client may send (HTTP/2's default is 16 KiB): a
/// 256 KiB chunk arrives in 4 `DATA` frames instead of 16, each one a
/// wake-up of its upload and a pass through the connection's framing. In
/// alternated runs the daemon spent ~5 % less CPU a 1 MB pack and large
/// packs were ingested 1–12 % faster, for ~4 MiB more at peak with 64
/// uploads at once (BENCHMARKS.md, round 17). A connection holds at most
/// one partial frame, so this bounds what a client can make it buffer.
pub(crate) const FRAME_BYTES: u32 = 64 * 1024;

/// Every method served, for the metrics' labels.
fn served_methods() -> anyhow::Result<Methods> {
    Methods::from_descriptor_sets(&[
        baton::api::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
}

/// All services, health and reflection on one router.
pub async fn router<S: Store>(
    builder: tonic::transport::Server,
    app: Arc<App<S>>,
) -> anyhow::Result<Router<Stack<RefusalLayer<S>, Stack<GrpcMetricsLayer, Identity>>>> {
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
            // What this listener serves; `baton.v1.Federation`, in the same
            // files, is served only on the federation listener.
            .with_service_name("baton.v1.Enrolment")
            .with_service_name("baton.v1.Directory")
            .with_service_name("baton.v1.Exchange")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
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
        .max_frame_size(Some(FRAME_BYTES))
        .tcp_nodelay(true)
        .layer(GrpcMetricsLayer::new(served_methods()?))
        .layer(RefusalLayer::new(app.clone()));
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
