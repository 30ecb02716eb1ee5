//! Fresh PostgreSQL databases for tests: one `CREATE DATABASE` per test on
//! the server named by `BATON_TEST_DATABASE_URL`, dropped when the handle
//! goes, so tests run in parallel and again and again. Also used by the
//! daemon's own store tests (included there by path).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use sqlx::Connection as _;

/// The variable naming the test server.
pub const URL_VAR: &str = "BATON_TEST_DATABASE_URL";

/// The test server's URL, if one is given.
pub fn server_url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty())
}

/// A line on stderr that `cargo test` does not capture (CI greps for it).
pub fn note(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Says that a PostgreSQL test was skipped, for `what`; under CI (`CI`
/// set), where the PostgreSQL tests must run, it fails instead.
pub fn skipped(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {URL_VAR} is not: the PostgreSQL tests must run ({what})"
    );
    note(&format!("SKIPPED: {URL_VAR} not set ({what})"));
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[host_start..].find('/') {
        Some(i) => &base[..host_start + i],
        None => base,
    };
    if query.is_empty() {
        format!("{root}/{name}")
    } else {
        format!("{root}/{name}?{query}")
    }
}

/// A database of its own on the test server; dropped with the handle.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    server: String,
    name: String,
}

impl TestDb {
    /// Creates `baton_test_<random>` on `server`.
    pub async fn create(server: &str) -> Self {
        let name = format!("baton_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Self {
            url: with_database(server, &name),
            server: server.to_string(),
            name,
        }
    }

    /// A fresh database when `BATON_TEST_DATABASE_URL` is set.
    pub async fn from_env() -> Option<Self> {
        match server_url() {
            Some(server) => Some(Self::create(&server).await),
            None => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
