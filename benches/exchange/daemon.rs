//! Starting the real `batond`, enrolling schools and connecting to it.

use crate::*;

/// A running `batond`; killed when dropped.
pub(crate) struct Daemon {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
    pub(crate) ca: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) database_url: Option<String>,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn batond() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_batond"));
    cmd.env_remove("BATON_CONFIG")
        .env_remove("BATON_DATA_DIR")
        .env_remove("BATON_LISTEN")
        .env_remove("BATON_LOG");
    cmd
}

impl Daemon {
    pub(crate) async fn start(database_url: Option<String>) -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let mut cmd = batond();
        if let Some(url) = &database_url {
            cmd.args(["--database-url", url]);
        }
        let mut child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-pack-bytes", &(2u64 << 30).to_string()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("batond exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next_line().await?.ok_or("batond exited early")?;
        let url = first
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line: {first}"))?
            .to_string();
        let second = lines.next_line().await?.ok_or("batond exited early")?;
        let ca = PathBuf::from(
            second
                .strip_prefix("CA certificate: ")
                .ok_or_else(|| format!("unexpected second line: {second}"))?,
        );
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            url,
            ca,
            data,
            database_url,
            _dir: dir,
        })
    }

    pub(crate) async fn admin(&self, args: &[&str]) -> Res<String> {
        let mut cmd = batond();
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        let out = cmd
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .await?;
        if !out.status.success() {
            return Err(
                format!("batond {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub(crate) async fn code(&self, laestab: &str) -> Res<String> {
        let out = self
            .admin(&[
                "admin", "school", "add", laestab, "--name", "Bench", "--phase", "primary",
                "--json",
            ])
            .await?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        Ok(json["code"].as_str().ok_or("no code")?.to_string())
    }

    pub(crate) async fn enrol(&self, laestab: &str) -> Res<School> {
        let code = self.code(laestab).await?;
        let identity = Identity::generate();
        let laestab = Laestab::parse(laestab)?;
        let key = school_key(&identity);
        let proof = identity
            .sign(&enrol_statement(&laestab, identity.key_id()))
            .to_vec();
        let resp = EnrolmentClient::new(channel(&self.url, &self.ca).await?)
            .redeem(v1::RedeemRequest {
                laestab: laestab.to_string(),
                code,
                key: Some(v1::Key::from(&key)),
                proof,
            })
            .await?
            .into_inner();
        Ok(School {
            laestab,
            identity,
            token: resp.token,
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub(crate) async fn channel(url: &str, ca: &Path) -> Res<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .domain_name("localhost");
    Ok(Channel::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect()
        .await?)
}

pub(crate) fn exchange(channel: &Channel) -> ExchangeClient<Channel> {
    ExchangeClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub(crate) fn school_key(identity: &Identity) -> SchoolKey {
    SchoolKey {
        public: identity.public(),
        label: "bench".into(),
        roles: vec![Role::Dsl, Role::Staff],
        created_at_ms: 0,
        revoked_at_ms: None,
    }
}

/// An enrolled school as its client sees it.
pub(crate) struct School {
    pub(crate) laestab: Laestab,
    pub(crate) identity: Identity,
    pub(crate) token: String,
}

pub(crate) fn req<T>(token: &str, msg: T) -> Res<Request<T>> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

// ---------------------------------------------------------------- packs

/// A valid UPN with the given serial.
pub(crate) fn upn(serial: u32) -> String {
    let body = format!("86120012{:01}{:03}", serial / 1000 % 10, serial % 1000);
    let check = baton::upn::check_letter(body.as_bytes());
    format!("{}{body}", char::from(check))
}

pub(crate) fn record(serial: u32) -> TransitionRecord {
    TransitionRecord {
        upn: upn(serial),
        surname: format!("Bench-{serial}"),
        forename: "Pupil".into(),
        dob: "2015-03-04".into(),
        sex: "F".into(),
        notes: "A pastoral note of a sentence or two.".into(),
        ..Default::default()
    }
}
