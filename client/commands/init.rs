//! `baton init`: generate this key holder's keys locally, redeem the
//! operator's one-time enrolment code, save the token, pin our own school.

use std::path::PathBuf;

use age::secrecy::ExposeSecret as _;
use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::api::v1;
use baton::crypto::Identity;
use baton::keys::{Role, SchoolKey, enrol_statement};

use crate::connect::{enrolment, explain};
use crate::home::{Config, Home, write_atomic, write_json};
use crate::output::{now_ms, time};
use crate::pins::Pins;

/// Enrol this school with a Baton server.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's URL, e.g. https://baton.trust.example:50051.
    #[arg(long)]
    server: String,
    /// The CA certificate the operator gave you (batond's DATA_DIR/tls/ca.pem).
    #[arg(long)]
    ca: PathBuf,
    /// This school's LAESTAB (7 digits).
    #[arg(long)]
    school: Laestab,
    /// The one-time enrolment code from the operator.
    #[arg(long)]
    code: String,
    /// A label for this key, e.g. "Office PC (data manager)".
    #[arg(long, default_value = "")]
    label: String,
    /// Roles of this key's holder; repeat for several. Only `dsl` keys receive safeguarding packs.
    #[arg(long = "role", value_name = "dsl|senco|staff", default_value = "staff")]
    roles: Vec<Role>,
}

/// Runs `baton init`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    if home.is_initialised() {
        bail!(
            "{} already holds an enrolled school; use another --home for another school",
            home.root().display()
        );
    }
    let ca = std::fs::read(&args.ca)
        .with_context(|| format!("reading CA certificate {}", args.ca.display()))?;
    if !String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE") {
        bail!("{} is not a PEM certificate", args.ca.display());
    }
    let identity = Identity::generate();
    let label = if args.label.is_empty() {
        default_label()
    } else {
        args.label.clone()
    };
    let key = SchoolKey {
        public: identity.public(),
        label,
        roles: args.roles.clone(),
        created_at_ms: 0,
        revoked_at_ms: None,
    };
    let proof = identity.sign(&enrol_statement(&args.school, identity.key_id()));
    let mut client = enrolment(&args.server, &ca).await?;
    let response = client
        .redeem(v1::RedeemRequest {
            laestab: args.school.to_string(),
            code: args.code.trim().to_string(),
            key: Some(v1::Key::from(&key)),
            proof: proof.to_vec(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("redeeming the enrolment code: {}", explain(&s)))?
        .into_inner();

    std::fs::create_dir_all(home.root())
        .with_context(|| format!("creating {}", home.root().display()))?;
    write_atomic(
        &home.path("identity.txt"),
        identity
            .to_file_text(&time(now_ms()))
            .expose_secret()
            .as_bytes(),
        true,
    )?;
    write_atomic(&home.path("token"), response.token.as_bytes(), true)?;
    write_atomic(&home.path("ca.pem"), &ca, false)?;
    let mut pins = Pins::load(home)?;
    if let Some(school) = &response.school {
        pins.trust(school)?;
    }
    pins.save(home)?;
    write_json(
        &home.path("config.json"),
        &Config {
            server: args.server.clone(),
            school: args.school,
            key_id: identity.key_id().to_string(),
        },
    )?;
    let name = response.school.map(|s| s.name).unwrap_or_default();
    println!("enrolled {} ({name}) at {}", args.school, args.server);
    println!("key id: {}", identity.key_id().grouped());
    println!("home: {}", home.root().display());
    Ok(())
}

fn default_label() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "baton key".into())
}
