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
use baton::trust::DirectoryKey;

/// Enrol this school with a Baton server.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's URL, e.g. https://baton.trust.example:50051.
    #[arg(long)]
    server: String,
    /// The CA certificate the operator gave you (batond's DATA_DIR/tls/ca.pem).
    #[arg(long)]
    ca: PathBuf,
    /// This school's LAESTAB (7 digits), or XXXXXXX for the trust's escrow
    /// holder (`batond admin escrow add`).
    #[arg(long)]
    school: Laestab,
    /// The one-time enrolment code from the operator. Leave it out to be
    /// asked for it (it then stays out of the shell's history).
    #[arg(long)]
    code: Option<String>,
    /// Protect this device's private key with a passphrase (asked for on
    /// the terminal, or `BATON_PASSPHRASE`); every later command needs it
    /// (`BATON_PASSPHRASE`, or the prompt). `age -d` still opens the file.
    #[arg(long)]
    passphrase: bool,
    /// The trust's directory key the operator gave you with the CA
    /// certificate (`batondir1…`): every school key is then checked against
    /// it, so the server cannot hand out a key of its own. Without it keys
    /// are trusted on first use, like SSH.
    #[arg(long, value_name = "batondir1…")]
    directory_key: Option<DirectoryKey>,
    /// Allow a plaintext `http://` server URL, for a development daemon on
    /// this machine only (`batond serve --insecure-loopback`).
    #[arg(long)]
    insecure_loopback: bool,
    /// A label for this key, e.g. "Office PC (data manager)"; the default is
    /// this computer's name.
    #[arg(long, default_value_t = default_label())]
    label: String,
    /// Roles of this key's holder; repeat for several. Only `dsl` keys
    /// receive safeguarding packs. The enrolment code says which roles it
    /// grants (the operator chose them); without `--role` the key takes
    /// them all, and a role the code does not grant is refused.
    #[arg(long = "role", value_name = "dsl|senco|staff")]
    roles: Vec<Role>,
    /// Enrol again in this home with a new code (this device's token was
    /// revoked, or its key replaced): new keys, new token; the outbox
    /// journal, pulled packs and pinned schools are kept. The old identity
    /// file is kept beside the new one as `identity-<KEYID>.retired.txt`, and
    /// `baton pull` still opens packs that were sealed to it.
    #[arg(long)]
    reenrol: bool,
}

/// Runs `baton init`.
pub async fn run(home: &Home, args: Args) -> Result<()> {
    if home.is_initialised() && !args.reenrol {
        bail!(
            "{} already holds an enrolled school; use another --home for another school, or --reenrol to enrol this one again with a new code",
            home.root().display()
        );
    }
    let previous = if args.reenrol && home.is_initialised() {
        let config = home.config()?;
        if config.school != args.school {
            bail!(
                "{} belongs to {}, not {}: --reenrol enrols the same school again; use another --home for another school",
                home.root().display(),
                config.school,
                args.school
            );
        }
        Some(config)
    } else {
        None
    };
    let retiring = if previous.is_some() {
        retiring(home)?
    } else {
        None
    };
    let ca = std::fs::read(&args.ca)
        .with_context(|| format!("reading CA certificate {}", args.ca.display()))?;
    if !String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE") {
        bail!("{} is not a PEM certificate", args.ca.display());
    }
    let code = match &args.code {
        Some(code) => code.clone(),
        None => ask("Enrolment code: ")
            .context("no --code given and no terminal to ask for it on: pass --code CODE")?,
    };
    let passphrase = if args.passphrase {
        Some(new_passphrase()?)
    } else {
        None
    };
    let identity = Identity::generate();
    let label = args.label.clone();
    let key = SchoolKey {
        public: identity.public(),
        label,
        roles: args.roles.clone(),
        created_at_ms: 0,
        revoked_at_ms: None,
        endorsement: None,
        revocation: None,
    };
    let proof = identity.sign(&enrol_statement(&args.school, identity.key_id()));
    let mut client = enrolment(&args.server, &ca, args.insecure_loopback).await?;
    let response = client
        .redeem(v1::RedeemRequest {
            laestab: args.school.to_string(),
            code: code.trim().to_string(),
            key: Some(v1::Key::from(&key)),
            proof: proof.to_vec(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("redeeming the enrolment code: {}", explain(&s)))?
        .into_inner();

    std::fs::create_dir_all(home.root())
        .with_context(|| format!("creating {}", home.root().display()))?;
    if let Some((from, to)) = &retiring {
        std::fs::rename(from, to)
            .with_context(|| format!("keeping the old identity as {}", to.display()))?;
    }
    let created = time(now_ms());
    let identity_file = match &passphrase {
        Some(p) => identity
            .to_protected_file(&created, p, None)
            .context("protecting the identity with the passphrase")?,
        None => identity
            .to_file_text(&created)
            .expose_secret()
            .as_bytes()
            .to_vec(),
    };
    write_atomic(&home.path("identity.txt"), &identity_file, true)?;
    write_atomic(&home.path("token"), response.token.as_bytes(), true)?;
    write_atomic(&home.path("ca.pem"), &ca, false)?;
    let mut pins = Pins::load(home)?;
    if let Some(key) = args.directory_key {
        pins.set_directory_key(key);
    }
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
            keep_pupil_names_days: previous.as_ref().map_or(30, |c| c.keep_pupil_names_days),
            insecure_loopback: args.insecure_loopback,
        },
    )?;
    let granted = response.school.as_ref().and_then(|s| {
        s.keys
            .iter()
            .find(|k| k.key_id == identity.key_id().to_string())
            .and_then(|k| SchoolKey::try_from(k).ok())
            .map(|k| baton::keys::role_names(&k.roles, ", "))
    });
    let name = response.school.map(|s| s.name).unwrap_or_default();
    let again = if previous.is_some() {
        "re-enrolled"
    } else {
        "enrolled"
    };
    println!("{again} {} ({name}) at {}", args.school, args.server);
    println!("key id: {}", identity.key_id().grouped());
    if let Some(mine) = granted {
        println!("roles: {mine}");
    }
    println!("home: {}", home.root().display());
    if let Some(key) = pins.directory_key()? {
        println!(
            "directory key {} pinned: read the key id above to the trust's operator, who approves it (`batond admin key approve`); until then other schools accept nothing it signs",
            key.fingerprint()
        );
    }
    Ok(())
}

/// Where the identity being replaced goes: named by its own key id (not
/// config.json's, which a crash between the two writes leaves stale), and
/// never over another file (a retired file of that key id already holds the
/// same key, so there is nothing to move). Read before the code is redeemed,
/// so an unreadable identity stops `--reenrol` before anything changes.
fn retiring(home: &Home) -> Result<Option<(PathBuf, PathBuf)>> {
    let from = home.path("identity.txt");
    if !from.exists() {
        return Ok(None);
    }
    let old = home.identity().context(
        "the identity being replaced cannot be read (set BATON_PASSPHRASE if it has one); nothing was changed",
    )?;
    let to = home.retired_identity_path(&old);
    Ok((!to.exists()).then_some((from, to)))
}

/// Reads a secret typed on the terminal (not echoed); an error when there
/// is no terminal.
fn ask(prompt: &str) -> Result<String> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        bail!("not on a terminal");
    }
    let answer = rpassword::prompt_password(prompt).context("reading from the terminal")?;
    Ok(answer.trim().to_string())
}

/// The passphrase for a new identity: `BATON_PASSPHRASE`, or typed twice on
/// the terminal.
fn new_passphrase() -> Result<age::secrecy::SecretString> {
    let typed = match std::env::var("BATON_PASSPHRASE") {
        Ok(p) => p,
        Err(_) => {
            let first = ask("Passphrase for this device's key: ").context(
                "--passphrase needs a terminal to ask on, or the passphrase in BATON_PASSPHRASE",
            )?;
            let again = ask("The same passphrase again: ")?;
            if first != again {
                bail!("the two passphrases differ; nothing was changed");
            }
            first
        }
    };
    if typed.chars().count() < 8 {
        bail!("a passphrase needs at least 8 characters; nothing was changed");
    }
    Ok(age::secrecy::SecretString::from(typed))
}

/// This computer's name, for a key's label.
fn default_label() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "baton key".into())
}
