//! The shared statements ([`shared_store!`], [`lifecycle_store!`]) for SQLite.

use sqlx::{Sqlite as Db, SqliteConnection, SqlitePool};

use super::Sqlite;
use super::chain::{append, append_all, begin};

shared_store!(Sqlite, SqliteConnection, SqlitePool, Db, for_update = "");
queue_writer!(SqlitePool, SqliteConnection, for_update = "");
lifecycle_store!(Sqlite, SqliteConnection, for_update = "");
dashboard_store!(Sqlite);
peers_store!(Sqlite);
relays_store!(Sqlite);
