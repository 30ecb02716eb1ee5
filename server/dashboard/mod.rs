//! The trust dashboard: `batond serve --http-listen ADDR` serves read-only
//! pages over HTTPS with the daemon's own certificate (HTTP/1.1, so on a
//! listener of its own: browsers have no client certificates and the gRPC
//! listener speaks only h2). An axum router on the daemon's runtime.
//!
//! Who may look: whoever opens a link from `batond admin dashboard link`.
//! The link's token is stored (hashed) in the database and works once,
//! within [`LINK_MINUTES`]; it becomes a session cookie (HttpOnly, Secure,
//! SameSite=Strict) kept in this process for [`SESSION_HOURS`]. Without one,
//! every page answers 401 with how to get a link. Sign-ins are audited;
//! an address with 10 failed sign-ins in a minute waits (429) before the
//! store sees another.
//!
//! What it shows is metadata the daemon holds anyway (schools, keys,
//! counts, times, audit actions): never a pupil, never a token or key
//! secret. Pages are server-rendered, with no script and no asset from
//! another host, and print cleanly.

mod pages;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::app::App;
use crate::audit::Event;
use crate::listener::Admitted;
use crate::store::{Store, now_ms};
use crate::tls::live::LiveCerts;

/// Minutes a sign-in link stays valid.
pub const LINK_MINUTES: i64 = 15;

/// Hours a dashboard session lasts.
const SESSION_HOURS: u64 = 8;

/// Most sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 256;

/// Failed sign-ins an address may make in a minute before it must wait.
const MAX_FAILED_SIGNINS: usize = 10;

/// The session cookie.
const COOKIE: &str = "batond_dashboard";

/// The file in the data directory where `serve` records the dashboard's
/// address, for `admin dashboard link`.
pub const URL_FILE: &str = "dashboard-url";

/// The SHA-256 of a link's token, as the store keeps it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What every page shares.
pub struct Dashboard<S> {
    app: Arc<App<S>>,
    certs: Arc<LiveCerts>,
    /// Session id's SHA-256 → when it ends.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Failed sign-ins per address: a guesser is slowed before the store
    /// sees its attempts.
    attempts: crate::attempts::Attempts,
}

impl<S> Dashboard<S> {
    fn start_session(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, end| *end > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token_hash(&id),
            now + Duration::from_secs(SESSION_HOURS * 3600),
        );
        id
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(&token_hash(&id))
            .is_some_and(|end| *end > Instant::now())
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&token_hash(&id));
        }
    }
}

/// The session id in the request's cookie, if any.
fn cookie(headers: &HeaderMap) -> Option<String> {
    baton::web::cookie(headers, COOKIE)
}

/// A plain page saying why nothing is shown.
fn plain(status: StatusCode, why: &str) -> Response {
    let body = baton::web::plain_page("Baton trust dashboard", why);
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// What a page without a session says.
const HOW_TO_SIGN_IN: &str = "Sign in with a link from the server: run <code>batond admin dashboard link</code> \
     there (each link works once, for 15 minutes).";

/// Security headers on every answer.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Lets only signed-in requests reach the pages.
async fn guard<S: Store>(
    State(dash): State<Arc<Dashboard<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if dash.signed_in(request.headers()) {
        next.run(request).await
    } else {
        plain(StatusCode::UNAUTHORIZED, HOW_TO_SIGN_IN)
    }
}

/// `GET /signin?t=TOKEN`: uses the link up and starts a session.
async fn sign_in<S: Store>(
    State(dash): State<Arc<Dashboard<S>>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let address = Some(peer.ip());
    if dash.attempts.check(address).is_err() {
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from this address; wait a minute.",
        );
    }
    let token = match query.get("t") {
        Some(t) if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) => t,
        _ => {
            dash.attempts.failed(address);
            return plain(StatusCode::UNAUTHORIZED, HOW_TO_SIGN_IN);
        }
    };
    let event = Event::by_address(Some(peer.ip()), "dashboard.signin", "dashboard");
    match dash
        .app
        .store
        .redeem_dashboard_link(token_hash(token), now_ms(), event)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            dash.attempts.failed(address);
            return plain(
                StatusCode::UNAUTHORIZED,
                "This link was used already or has expired. Run <code>batond admin dashboard link</code> on the server for a new one.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard: redeeming a sign-in link failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "Storage failure; try again.",
            );
        }
    }
    let id = dash.start_session();
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_HOURS * 3600
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET /signout`: ends the session.
async fn sign_out<S: Store>(State(dash): State<Arc<Dashboard<S>>>, headers: HeaderMap) -> Response {
    dash.end_session(&headers);
    let mut response = plain(StatusCode::OK, "Signed out.");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "batond_dashboard=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    response
}

/// The caller's address, as axum's connection info.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Connections whose TLS handshake completed, for axum.
struct TlsListener {
    conns: ReceiverStream<io::Result<TlsStream<Admitted>>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Admitted>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.conns.next().await {
                Some(Ok(io)) => {
                    let peer = io.get_ref().0.peer();
                    return (io, peer);
                }
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The address to put in links: the first `--tls-name` if there is one
/// (the certificate names it), else the bound address.
fn public_url(local: SocketAddr, names: &[String]) -> String {
    match names.first() {
        Some(name) if name.contains(':') => format!("https://[{name}]:{}", local.port()),
        Some(name) => format!("https://{name}:{}", local.port()),
        None if local.ip().is_unspecified() => format!("https://localhost:{}", local.port()),
        None => format!("https://{local}"),
    }
}

/// Serves the dashboard on `address` until the daemon shuts down; records
/// its address in `data_dir` for `admin dashboard link`; returns the bound
/// address.
pub async fn serve<S: Store>(
    address: SocketAddr,
    app: Arc<App<S>>,
    certs: Arc<LiveCerts>,
    config: &crate::config::Config,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening for the dashboard on {address}"))?;
    let local = listener
        .local_addr()
        .context("reading the dashboard address")?;
    let url = public_url(local, &config.tls_names);
    write_url(&config.data_dir, &url)?;
    let limits = &config.limits;
    let admitted = crate::listener::incoming(
        listener,
        limits.max_connections,
        limits.max_connections_per_address,
    );
    let conns = crate::listener::handshakes(
        admitted,
        certs.acceptor(&[b"http/1.1"])?,
        Duration::from_secs(limits.tls_handshake_timeout_secs),
    );
    let shutdown = app.shutdown.clone();
    let dash = Arc::new(Dashboard {
        app,
        certs,
        sessions: Mutex::new(HashMap::new()),
        attempts: crate::attempts::Attempts::new(
            "dashboard sign-ins",
            MAX_FAILED_SIGNINS,
            Duration::from_secs(60),
        ),
    });
    let pages = pages::router::<S>().route_layer(axum::middleware::from_fn_with_state(
        dash.clone(),
        guard::<S>,
    ));
    let router = axum::Router::new()
        .route("/signin", axum::routing::get(sign_in::<S>))
        .route("/signout", axum::routing::get(sign_out::<S>))
        .merge(pages)
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "No such page.") })
        .layer(axum::middleware::from_fn(headers))
        .with_state(dash);
    let listener = TlsListener { conns, local };
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<Peer>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the dashboard listener stopped");
        }
    });
    Ok(local)
}

/// Records the dashboard's URL in `data_dir` (readable by the owner only).
fn write_url(data_dir: &Path, url: &str) -> anyhow::Result<()> {
    let path = data_dir.join(URL_FILE);
    std::fs::write(&path, format!("{url}\n")).with_context(|| format!("writing {}", path.display()))
}
