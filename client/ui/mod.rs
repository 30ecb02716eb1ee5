//! `baton ui`: the teacher's desk, a local web page for the people who are
//! not command-line users. It runs where the keys are, in this process, on
//! loopback only: the trust's server never sees a page, a key or a pupil.
//! Every request passes [`session::guard`] first (the printed one-time
//! link, a session cookie, the page's own `Host`, CSRF tokens on forms);
//! the pages ([`pages`]) call the same code as the commands.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::routing::{get, post};

use crate::home::Home;

pub(crate) mod actions;
mod pages;
pub(crate) mod session;

/// Open the local page (this computer only).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on: loopback only (127.0.0.1 or ::1); port 0
    /// picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Do not open the browser; only print the link.
    #[arg(long)]
    no_open: bool,
}

/// Runs `baton ui` until interrupted.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the page serves this computer only; use 127.0.0.1 or ::1",
            args.listen
        );
    }
    home.config()
        .context("this home is not enrolled yet: run `baton init` first")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let (sessions, token) = session::Sessions::new(local);
    let ctx = pages::Ctx {
        home: Arc::new(home.clone()),
        sessions: Arc::clone(&sessions),
        jobs: Arc::default(),
    };
    let app = Router::new()
        .route("/", get(pages::home))
        .route("/inbox", get(pages::inbox))
        .route("/sent", get(pages::sent))
        .route("/schools", get(pages::schools))
        .route("/schools/{laestab}", get(pages::school))
        .route("/schools/trust", post(pages::school_trust))
        .route("/sent/receipts.csv", get(pages::receipts_csv))
        .route("/send", get(pages::send))
        .route("/send/check", post(pages::send_check))
        .route("/send/go", post(pages::send_go))
        .route("/send/job/{id}", get(pages::send_job))
        .route("/inbox/pull", post(pages::inbox_pull))
        .route("/style.css", get(pages::style))
        .with_state(ctx)
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            session::guard,
        ));
    let host = match local {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    let url = format!("http://{host}/?token={token}");
    println!("open {url}");
    if !args.no_open {
        open_browser(&url);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the page")
}

/// Asks the desktop to open `url`; the printed link is there if it cannot.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
