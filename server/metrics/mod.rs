//! Prometheus metrics: `batond serve --metrics-listen ADDR` serves the text
//! format at `/metrics` on plain HTTP. The gRPC calls are measured by
//! [`grpc`]; Baton's own figures are packs by state and the ciphertext
//! they hold (read from the store at each scrape), overdue packs, group
//! commits (size and time), purges by reason and storage errors by kind.
//!
//! No label carries a school, a pair of schools, a pack id or anything
//! about a pupil: the only labels are method names, status codes, pack
//! states, purge reasons and error kinds, all from fixed sets.

pub mod grpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::App;
use crate::store::{PackStatus, Store};

/// Buckets for durations, seconds (Prometheus' default buckets, as
/// go-grpc-prometheus uses).
const SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for packs in one group commit.
const GROUP_SIZES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often histograms are tidied between scrapes.
const UPKEEP: Duration = Duration::from_secs(10);

/// Installs the process-wide recorder; from now on every `metrics::`
/// macro in the daemon counts. Without it they cost next to nothing.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("grpc_server_handling_seconds".into()),
            &SECONDS,
        )?
        .set_buckets_for_metric(Matcher::Full("baton_group_commit_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(
            Matcher::Full("baton_group_commit_packs".into()),
            &GROUP_SIZES,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    Ok(handle)
}

/// The HELP lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "grpc_server_started_total",
        "Total number of RPCs started on the server."
    );
    describe_counter!(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server."
    );
    describe_counter!(
        "grpc_server_msg_received_total",
        "Total number of RPC stream messages received on the server."
    );
    describe_counter!(
        "grpc_server_msg_sent_total",
        "Total number of gRPC stream messages sent by the server."
    );
    describe_gauge!("baton_packs", "Packs stored, by state.");
    describe_gauge!(
        "baton_stored_bytes",
        "Bytes of ciphertext held, by pack state."
    );
    describe_gauge!(
        "baton_relay_waiting_packs",
        "Packs waiting to be relayed to another trust's daemon, by peer."
    );
    describe_gauge!(
        "baton_packs_overdue",
        "Packs not acknowledged by their statutory due date."
    );
    describe_histogram!(
        "baton_group_commit_packs",
        "Uploads made durable together in one group commit."
    );
    describe_histogram!(
        "baton_group_commit_seconds",
        "Time to write and sync one group commit."
    );
    describe_counter!(
        "baton_purged_packs_total",
        "Packs whose ciphertext this daemon purged under retention, by reason."
    );
    describe_counter!(
        "baton_store_errors_total",
        "Storage failures answered as Unavailable, by kind."
    );
}

/// What the metrics page reads.
struct Scrape<S> {
    handle: PrometheusHandle,
    app: Arc<App<S>>,
}

/// Serves `/metrics` on `address` until the daemon shuts down; returns the
/// bound address once listening.
pub async fn serve<S: Store>(
    address: SocketAddr,
    handle: PrometheusHandle,
    app: Arc<App<S>>,
) -> anyhow::Result<SocketAddr> {
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "metrics are served without authentication beyond loopback: keep this address on a monitoring network");
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening for metrics on {address}"))?;
    let local = listener
        .local_addr()
        .context("reading the metrics address")?;
    let shutdown = app.shutdown.clone();
    {
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        });
    }
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(page::<S>))
        .with_state(Arc::new(Scrape { handle, app }));
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(local)
}

/// `GET /metrics`: the store's figures refreshed, then everything rendered.
async fn page<S: Store>(State(scrape): State<Arc<Scrape<S>>>) -> axum::response::Response {
    if let Err(e) = refresh(&scrape.app).await {
        tracing::warn!(error = %e, "metrics: reading pack totals failed");
        return (StatusCode::SERVICE_UNAVAILABLE, "storage failure\n").into_response();
    }
    scrape.handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        scrape.handle.render(),
    )
        .into_response()
}

/// Sets the gauges read from the store.
async fn refresh<S: Store>(app: &App<S>) -> anyhow::Result<()> {
    let totals = app.store.totals().await?;
    for status in PackStatus::ALL {
        let t = totals.iter().find(|t| t.status == status);
        let (packs, bytes) = t.map_or((0, 0), |t| (t.packs, t.bytes));
        metrics::gauge!("baton_packs", "state" => status.as_str()).set(packs as f64);
        metrics::gauge!("baton_stored_bytes", "state" => status.as_str()).set(bytes as f64);
    }
    let backlog = app.store.relay_backlog().await?;
    for peers in app.store.peers().await? {
        let waiting = backlog
            .iter()
            .find(|b| b.peer == peers.name)
            .map_or(0, |b| b.packs);
        metrics::gauge!("baton_relay_waiting_packs", "peer" => peers.name.clone())
            .set(waiting as f64);
    }
    let overdue = crate::clocks::overdue::overdue(&app.store).await?;
    metrics::gauge!("baton_packs_overdue").set(overdue.len() as f64);
    Ok(())
}
