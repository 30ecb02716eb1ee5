//! Who may use the local page, checked on every request before any page
//! runs: the `Host` must be the loopback address and port the page listens
//! on (a web page elsewhere cannot reach it by DNS rebinding); the one-time
//! token `baton ui` printed is exchanged, once, for a session cookie
//! (HttpOnly, SameSite=Strict); without that cookie nothing is served; and
//! every form that changes anything carries the session's CSRF token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie holding a session id.
const COOKIE: &str = "baton_session";

/// Sessions of one `baton ui` run.
pub struct Sessions {
    /// The address the page listens on: the only `Host` it answers.
    listen: SocketAddr,
    /// The one-time token from the printed link, until it is used.
    token: Mutex<Option<String>>,
    /// Session id → its CSRF token.
    sessions: Mutex<HashMap<String, String>>,
}

/// A random 32-byte value, hex.
fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Compares two secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Sessions {
    /// New sessions for a page on `listen`, with a fresh one-time token.
    pub fn new(listen: SocketAddr) -> (Arc<Self>, String) {
        let token = random_hex();
        let sessions = Arc::new(Self {
            listen,
            token: Mutex::new(Some(token.clone())),
            sessions: Mutex::new(HashMap::new()),
        });
        (sessions, token)
    }

    /// The CSRF token of the session the request carries, if any.
    pub fn csrf(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_id(headers)?;
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&id).cloned()
    }

    /// Whether `Host` names this page's own address and port.
    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let port = self.listen.port();
        let ip = self.listen.ip();
        let mut allowed = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
        if ip.is_ipv6() {
            allowed.push(format!("[{ip}]:{port}"));
        }
        allowed.iter().any(|a| a == host)
    }

    /// Uses up the one-time token if `offered` is it; a session id then.
    fn redeem(&self, offered: &str) -> Option<String> {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if !token.as_deref().is_some_and(|t| same(t, offered)) {
            return None;
        }
        *token = None;
        let id = random_hex();
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), random_hex());
        Some(id)
    }

    fn known(&self, headers: &HeaderMap) -> bool {
        self.csrf(headers).is_some()
    }
}

/// The session id in the request's cookie, if any.
fn session_id(headers: &HeaderMap) -> Option<String> {
    baton::web::cookie(headers, COOKIE)
}

/// A plain refusal page.
fn refused(status: StatusCode, why: &str) -> Response {
    let body = baton::web::plain_page("Baton", why);
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The guard in front of every route (see the module).
pub async fn guard(
    State(sessions): State<Arc<Sessions>>,
    request: Request,
    next: Next,
) -> Response {
    if !sessions.host_ok(request.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "This page answers only at the address `baton ui` printed.",
        );
    }
    let offered = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "token")
            .map(|(_, value)| value.to_string())
    });
    if let Some(offered) = offered {
        let Some(id) = sessions.redeem(&offered) else {
            return refused(
                StatusCode::UNAUTHORIZED,
                "This link was used already, or is not the one `baton ui` printed. Run `baton ui` again for a new one.",
            );
        };
        let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
        let mut response = (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, request.uri().path().to_string())],
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    if !sessions.known(request.headers()) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "Open the link `baton ui` printed (it works once), on this computer.",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Checks a form's CSRF token against the session's: `None` when it
/// matches, else the refusal to answer with.
pub fn check_csrf(sessions: &Sessions, headers: &HeaderMap, offered: &str) -> Option<Response> {
    match sessions.csrf(headers) {
        Some(expected) if same(&expected, offered) => None,
        _ => Some(refused(
            StatusCode::FORBIDDEN,
            "This form is out of date. Go back, reload the page and try again.",
        )),
    }
}
