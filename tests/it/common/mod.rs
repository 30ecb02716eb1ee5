//! Shared helpers for the end-to-end tests (and the exchange benchmark,
//! which includes them by path): start the real `batond` on port 0 in a
//! temporary data directory, enrol schools through `batond admin` and
//! `Enrolment.Redeem`, and talk to it over TLS with the CA it wrote.

#![allow(dead_code)]

pub mod pgdb;

pub mod cli;

pub mod sealing;

/// Runs the end-to-end scenario `async fn $name(daemon: Daemon)` twice: as
/// `$name::sqlite` on the embedded SQLite store, and as `$name::postgres`
/// on a fresh PostgreSQL database (skipped, saying so, when
/// `BATON_TEST_DATABASE_URL` is not set).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::common::Daemon::start_sqlite(&[]).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let what = concat!(module_path!(), " on PostgreSQL");
                if let Some(daemon) = crate::common::Daemon::start_postgres(what, &[]).await {
                    super::$name(daemon).await;
                }
            }
        }
    };
}

pub mod reliability;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use baton::Laestab;
use baton::api::v1;
use baton::api::v1::directory_client::DirectoryClient;
use baton::api::v1::enrolment_client::EnrolmentClient;
use baton::api::v1::exchange_client::ExchangeClient;
use baton::crypto::Identity;
use baton::keys::{Role, SchoolKey, enrol_statement};
use baton::pack::recipients_for;
use baton::pack::{FORMAT_VERSION, Header, Kind, PackId, Receipt, SignedHeader, SignedReceipt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Request, Status};

/// A running daemon; killed when dropped.
pub struct Daemon {
    /// The child process.
    pub child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA file it wrote.
    pub ca: PathBuf,
    /// Its data directory.
    pub data: PathBuf,
    /// Where its log (stderr) goes.
    pub log: PathBuf,
    /// `--database-url`, when not the SQLite file in the data directory.
    pub database_url: Option<String>,
    /// The lines it printed after the first two.
    printed: tokio::sync::watch::Receiver<Vec<String>>,
    _db: Option<Arc<pgdb::TestDb>>,
    _dir: tempfile::TempDir,
}

/// The daemons' log level (`BATON_LOG`): `debug` unless set, for tests
/// whose failures are read from the log; the bench sets `info`, the
/// daemon's default, so it measures the daemon as deployed (h2's frame
/// by frame debug lines cost a tenth of its CPU).
#[allow(dead_code)]
pub static DAEMON_LOG: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The `batond` binary under test.
pub fn batond() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batond"));
    cmd.env_remove("BATON_CONFIG")
        .env_remove("BATON_DATA_DIR")
        .env_remove("BATON_LISTEN")
        .env("BATON_LOG", DAEMON_LOG.get().copied().unwrap_or("debug"));
    cmd
}

impl Daemon {
    /// Starts `batond serve --data-dir TMP --listen 127.0.0.1:0 EXTRA...`
    /// on SQLite, whatever the environment says.
    pub async fn start_sqlite(extra: &[&str]) -> Self {
        Self::launch(None, None, extra).await
    }

    /// Starts `batond serve --data-dir TMP --listen 127.0.0.1:0 EXTRA...`
    /// on SQLite, or on a fresh PostgreSQL database when
    /// `BATON_TEST_BACKEND=postgres` and `BATON_TEST_DATABASE_URL` are set.
    pub async fn start(extra: &[&str]) -> Self {
        let postgres = std::env::var("BATON_TEST_BACKEND").is_ok_and(|b| b == "postgres");
        match pgdb::server_url() {
            Some(server) if postgres => {
                let db = Arc::new(pgdb::TestDb::create(&server).await);
                Self::launch(Some(db.url.clone()), Some(db), extra).await
            }
            _ => Self::launch(None, None, extra).await,
        }
    }

    /// Starts on a fresh PostgreSQL database, or returns `None` (saying
    /// so on stderr) when `BATON_TEST_DATABASE_URL` is not set.
    pub async fn start_postgres(what: &str, extra: &[&str]) -> Option<Self> {
        let Some(db) = pgdb::TestDb::from_env().await else {
            pgdb::skipped(what);
            return None;
        };
        pgdb::note(&format!("{what}: ran on PostgreSQL"));
        let db = Arc::new(db);
        Some(Self::launch(Some(db.url.clone()), Some(db), extra).await)
    }

    /// Starts another node on `other`'s database (PostgreSQL).
    pub async fn start_beside(other: &Daemon, extra: &[&str]) -> Self {
        Self::launch(other.database_url.clone(), other._db.clone(), extra).await
    }

    /// Starts another node of `other`'s trust: its database, and the keys
    /// every node shares (the audit key, the federation identity) copied
    /// into the new node's data directory, as an operator would.
    pub async fn start_node_of(other: &Daemon, extra: &[&str]) -> Self {
        Self::launch_seeded(
            other.database_url.clone(),
            other._db.clone(),
            extra,
            Some(&other.data),
        )
        .await
    }

    async fn launch(
        database_url: Option<String>,
        db: Option<Arc<pgdb::TestDb>>,
        extra: &[&str],
    ) -> Self {
        Self::launch_seeded(database_url, db, extra, None).await
    }

    async fn launch_seeded(
        database_url: Option<String>,
        db: Option<Arc<pgdb::TestDb>>,
        extra: &[&str],
        seed: Option<&Path>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if let Some(seed) = seed {
            let federation = data.join("federation");
            std::fs::create_dir_all(&federation).unwrap();
            std::fs::copy(
                seed.join("audit-signing.key"),
                data.join("audit-signing.key"),
            )
            .unwrap();
            for file in ["ca.pem", "ca-key.pem", "cert.pem", "key.pem"] {
                std::fs::copy(seed.join("federation").join(file), federation.join(file)).unwrap();
            }
            #[cfg(unix)]
            for dir in [&data, &federation] {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
        let log = dir.path().join("daemon.log");
        let mut cmd = batond();
        if let Some(url) = &database_url {
            cmd.args(["--database-url", url]);
        }
        let mut child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let Some(first) = lines.next_line().await.unwrap() else {
            panic!(
                "daemon exited before listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let url = first
            .strip_prefix("listening on ")
            .expect(&first)
            .to_string();
        let second = lines.next_line().await.unwrap().unwrap();
        let ca = PathBuf::from(second.strip_prefix("CA certificate: ").expect(&second));
        // Keep draining stdout so the daemon never blocks on it.
        let (tx, printed) = tokio::sync::watch::channel(Vec::new());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tx.send_modify(|all| all.push(line));
            }
        });
        Self {
            child,
            url,
            ca,
            data,
            log,
            database_url,
            printed,
            _db: db,
            _dir: dir,
        }
    }

    /// The rest of the line the daemon printed starting `prefix` (waiting
    /// up to 10 s for it).
    pub async fn printed(&self, prefix: &str) -> String {
        let mut printed = self.printed.clone();
        let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let hit = printed
                    .borrow_and_update()
                    .iter()
                    .find_map(|l| l.strip_prefix(prefix).map(str::to_string));
                if let Some(hit) = hit {
                    return Some(hit);
                }
                if printed.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(rest)) => rest,
            _ => panic!(
                "the daemon never printed {prefix:?}: {:?}",
                *self.printed.borrow()
            ),
        }
    }

    /// Runs `batond --data-dir DATA ARGS...` to completion.
    pub async fn admin(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = batond();
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        cmd.arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .await
            .unwrap()
    }

    /// Runs `batond admin key approve LAESTAB KEY_ID --directory-key-file
    /// SECRET`: the operator approves a key with the trust's directory key.
    pub async fn approve_key(
        &self,
        laestab: &str,
        key_id: &str,
        secret: &str,
    ) -> std::process::Output {
        self.admin(&[
            "admin",
            "key",
            "approve",
            laestab,
            key_id,
            "--directory-key-file",
            secret,
        ])
        .await
    }

    /// Runs `batond admin purge EXTRA... --acknowledged-days 0
    /// --unacknowledged-days 0 --json`: every pack old enough at once.
    pub async fn purge_now(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["admin", "purge"];
        args.extend_from_slice(extra);
        args.extend([
            "--acknowledged-days",
            "0",
            "--unacknowledged-days",
            "0",
            "--json",
        ]);
        self.admin(&args).await
    }

    /// A TLS channel trusting the daemon's CA.
    pub async fn channel(&self) -> Channel {
        tls_channel(&self.url, &self.ca).await
    }

    /// The SQLite database, for checks behind the daemon's back.
    pub fn db_path(&self) -> PathBuf {
        self.data.join("baton.db")
    }

    /// Enrols a school with one fresh key (roles dsl + staff).
    pub async fn enrol(&self, laestab: &str) -> School {
        let out = self
            .admin(&[
                "admin",
                "school",
                "add",
                laestab,
                "--name",
                "Test School",
                "--phase",
                "primary",
                "--role",
                "dsl",
                "--role",
                "staff",
                "--json",
            ])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let code = json["code"].as_str().unwrap().to_string();
        let identity = Identity::generate();
        let laestab = Laestab::parse(laestab).unwrap();
        let channel = self.channel().await;
        let resp = EnrolmentClient::new(channel.clone())
            .redeem(redeem_request(&laestab, &code, &identity))
            .await
            .unwrap()
            .into_inner();
        School {
            laestab,
            identity,
            token: resp.token,
            channel,
        }
    }
}

/// A TLS channel to `url` (a name of `localhost`) trusting the CA at `ca`.
pub async fn tls_channel(url: &str, ca: &Path) -> Channel {
    let ca = std::fs::read(ca).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A `RedeemRequest` registering `identity` for `laestab`.
pub fn redeem_request(laestab: &Laestab, code: &str, identity: &Identity) -> v1::RedeemRequest {
    let (key, proof) = key_and_proof(laestab, identity, &[Role::Dsl, Role::Staff]);
    v1::RedeemRequest {
        laestab: laestab.to_string(),
        code: code.into(),
        key: Some(key),
        proof,
    }
}

/// The wire key for `identity` and its proof of possession.
pub fn key_and_proof(laestab: &Laestab, identity: &Identity, roles: &[Role]) -> (v1::Key, Vec<u8>) {
    let key = SchoolKey {
        public: identity.public(),
        label: "test key".into(),
        roles: roles.to_vec(),
        created_at_ms: 0,
        revoked_at_ms: None,
        endorsement: None,
        revocation: None,
    };
    let proof = identity
        .sign(&enrol_statement(laestab, identity.key_id()))
        .to_vec();
    (v1::Key::from(&key), proof)
}

/// An enrolled school as its client sees it.
pub struct School {
    /// LAESTAB.
    pub laestab: Laestab,
    /// Its first key.
    pub identity: Identity,
    /// Its API token.
    pub token: String,
    /// A channel to the daemon.
    pub channel: Channel,
}

/// `msg` with `authorization: Bearer TOKEN`.
pub fn with_token<T>(token: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if !token.is_empty() {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    req
}

impl School {
    /// A request from this school.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        with_token(&self.token, msg)
    }

    /// Exchange client.
    pub fn exchange(&self) -> ExchangeClient<Channel> {
        ExchangeClient::new(self.channel.clone())
    }

    /// This school's calls through another node.
    pub fn via(&self, channel: &Channel) -> Via<'_> {
        Via {
            school: self,
            channel: channel.clone(),
        }
    }

    /// Directory client.
    pub fn directory(&self) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.channel.clone())
    }

    /// The current keys of `to` from the directory.
    pub async fn keys_of(&self, to: &Laestab) -> Vec<SchoolKey> {
        let school = self
            .directory()
            .get_school(self.req(v1::GetSchoolRequest {
                laestab: to.to_string(),
                peer: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        school
            .keys
            .iter()
            .map(|k| SchoolKey::try_from(k).unwrap())
            .collect()
    }

    /// A signed header for `ciphertext` to `to`, sealed (by key ids) to `keys`.
    pub fn header_for(&self, to: &Laestab, keys: &[SchoolKey], ciphertext: &[u8]) -> SignedHeader {
        self.header_with(PackId::new(), to, keys, ciphertext)
    }

    /// As [`School::header_for`] with a chosen pack id.
    pub fn header_with(
        &self,
        id: PackId,
        to: &Laestab,
        keys: &[SchoolKey],
        ciphertext: &[u8],
    ) -> SignedHeader {
        self.header_of(Kind::Transfer, id, to, keys, ciphertext)
    }

    /// As [`School::header_with`] for a pack of `kind` (sealed, by key ids,
    /// to the keys of `keys` that kind goes to).
    pub fn header_of(
        &self,
        kind: Kind,
        id: PackId,
        to: &Laestab,
        keys: &[SchoolKey],
        ciphertext: &[u8],
    ) -> SignedHeader {
        let recipient_key_ids = recipients_for(kind, keys)
            .iter()
            .map(|k| k.key_id())
            .collect();
        self.identity
            .sign_header(Header {
                format_version: FORMAT_VERSION,
                pack_id: id,
                from: self.laestab,
                to: *to,
                kind,
                created_at_ms: 1,
                ciphertext_len: ciphertext.len() as u64,
                ciphertext_sha256: Sha256::digest(ciphertext).into(),
                sender_key_id: self.identity.key_id(),
                recipient_key_ids,
                left_on: Some(time::macros::date!(2026 - 07 - 22)),
                supersedes: None,
                forwarded: None,
            })
            .unwrap()
    }

    /// Uploads `header` then `ciphertext` in chunks of `chunk` bytes.
    pub async fn upload(
        &self,
        header: &v1::PackHeader,
        ciphertext: &[u8],
        chunk: usize,
    ) -> Result<v1::UploadResponse, Status> {
        self.via(&self.channel)
            .upload(header, ciphertext, chunk)
            .await
    }

    /// A signed receipt for a pack this school received.
    pub fn receipt(&self, header: &v1::PackHeader) -> v1::Receipt {
        let signed: SignedReceipt = self
            .identity
            .sign_receipt(Receipt {
                pack_id: header.pack_id.parse().unwrap(),
                ciphertext_sha256: header.ciphertext_sha256.clone().try_into().unwrap(),
                received_at_ms: 2,
                recipient_key_id: self.identity.key_id(),
            })
            .unwrap();
        v1::Receipt::from(&signed)
    }

    /// Downloads a pack: (header, ciphertext).
    pub async fn download(&self, id: &str) -> Result<(v1::PackHeader, Vec<u8>), Status> {
        self.via(&self.channel).download(id).await
    }

    /// Every answer of one `DownloadMany` call for `ids`.
    pub async fn download_many(
        &self,
        ids: &[&str],
    ) -> Result<Vec<v1::DownloadManyResponse>, Status> {
        let pack_ids = ids.iter().map(|id| (*id).to_owned()).collect();
        let mut stream = self
            .exchange()
            .download_many(self.req(v1::DownloadManyRequest { pack_ids }))
            .await?
            .into_inner();
        let mut answers = Vec::new();
        while let Some(answer) = stream.message().await? {
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Uploads a pack of `len` random bytes to `to` (sealed, by key ids, to
    /// `keys`): its header and ciphertext.
    pub async fn send_random(
        &self,
        to: &Laestab,
        keys: &[SchoolKey],
        len: usize,
    ) -> (v1::PackHeader, Vec<u8>) {
        let data = ciphertext(len);
        let header = v1::PackHeader::from(&self.header_for(to, keys, &data));
        self.upload(&header, &data, 256 * 1024).await.unwrap();
        (header, data)
    }
}

/// A school's calls through a channel of choice (another node).
pub struct Via<'a> {
    /// The school calling.
    pub school: &'a School,
    /// The node called.
    pub channel: Channel,
}

impl Via<'_> {
    /// Exchange client on this channel.
    pub fn exchange(&self) -> ExchangeClient<Channel> {
        ExchangeClient::new(self.channel.clone())
    }

    /// As [`School::upload`].
    pub async fn upload(
        &self,
        header: &v1::PackHeader,
        ciphertext: &[u8],
        chunk: usize,
    ) -> Result<v1::UploadResponse, Status> {
        let msgs = upload_messages(header, ciphertext, chunk);
        self.exchange()
            .upload(self.school.req(tokio_stream::iter(msgs)))
            .await
            .map(|r| r.into_inner())
    }

    /// As [`School::download`].
    pub async fn download(&self, id: &str) -> Result<(v1::PackHeader, Vec<u8>), Status> {
        use v1::download_response::Part;
        let mut stream = self
            .exchange()
            .download(self.school.req(v1::DownloadRequest { pack_id: id.into() }))
            .await?
            .into_inner();
        let mut header = None;
        let mut data = Vec::new();
        while let Some(msg) = stream.message().await? {
            match msg.part.unwrap() {
                Part::Header(h) => header = Some(h),
                Part::Chunk(c) => {
                    assert!(c.len() <= 1024 * 1024);
                    data.extend_from_slice(&c)
                }
            }
        }
        Ok((header.unwrap(), data))
    }
}

/// The messages of an upload stream.
pub fn upload_messages(
    header: &v1::PackHeader,
    ciphertext: &[u8],
    chunk: usize,
) -> Vec<v1::UploadRequest> {
    use v1::upload_request::Part;
    let mut msgs = vec![v1::UploadRequest {
        part: Some(Part::Header(header.clone())),
    }];
    msgs.extend(ciphertext.chunks(chunk).map(|c| v1::UploadRequest {
        part: Some(Part::Chunk(prost::bytes::Bytes::copy_from_slice(c))),
    }));
    msgs
}

/// Random bytes standing in for an age file (the server never opens packs).
pub fn ciphertext(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// Opens the daemon's SQLite database directly.
pub async fn open_db(path: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(std::time::Duration::from_secs(15));
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}

/// The DOM headless Chromium builds for `url` (it follows redirects and
/// keeps cookies within the load); `None` (said on stderr) where no
/// Chromium is installed, a failure in CI.
pub async fn browser_dom(url: &str) -> Option<String> {
    let out = tokio::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(url)
        .output()
        .await;
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs chromium: {other:?}"
            );
            eprintln!("SKIPPED: no chromium for a page test");
            None
        }
    }
}

/// Whether Debian's `chromium-driver` and `python3-selenium` are here for
/// the WebDriver journeys; `false` (said on stderr) where they are not, a
/// failure in CI.
pub fn webdriver_ready() -> bool {
    let driver = Path::new("/usr/bin/chromedriver");
    let selenium = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .output();
    if driver.exists() && selenium.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs chromium-driver and python3-selenium"
    );
    eprintln!("SKIPPED: no chromium-driver or python3-selenium");
    false
}

/// Where a journey saves its screenshots: `BATON_UI_SCREENSHOTS` when set
/// (docs/ui/ holds the last ones looked at), else `root/shots`; created.
pub fn screenshot_dir(root: &Path) -> PathBuf {
    let shots = match std::env::var_os("BATON_UI_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => root.join("shots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

/// Runs the WebDriver journey `script` (Python) with `args`; it must print
/// "JOURNEY OK".
pub async fn run_journey(script: &Path, args: &[&std::ffi::OsStr]) {
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("JOURNEY OK"),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (files staged, files held) under a data directory's `baton.db-ciphertext/`.
pub fn ciphertext_files(data: &Path) -> (usize, usize) {
    let count = |dir: &Path| {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_ok_and(|t| t.is_file())
                        && !e.file_name().to_string_lossy().starts_with('.')
                })
                .count()
        })
    };
    let dir = data.join("baton.db-ciphertext");
    (count(&dir.join("staging")), count(&dir))
}
