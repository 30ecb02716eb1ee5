//! The shared statements ([`shared_store!`], [`lifecycle_store!`]) for SQLite.

use sqlx::{Sqlite as Db, SqliteConnection};

use super::Sqlite;
use super::chain::{append, begin};

shared_store!(
    Sqlite,
    SqliteConnection,
    sqlx::SqlitePool,
    Db,
    for_update = ""
);
lifecycle_store!(Sqlite, SqliteConnection, for_update = "");
dashboard_store!(Sqlite);
peers_store!(Sqlite);
relays_store!(Sqlite);
