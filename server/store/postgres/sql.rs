//! The shared statements ([`shared_store!`], [`lifecycle_store!`]) for
//! PostgreSQL, with the row lock on a pack being acknowledged, withdrawn or
//! purged.

use sqlx::{PgConnection, PgPool, Postgres as Db};

use super::Postgres;
use super::chain::{append, append_all, begin};

shared_store!(
    Postgres,
    PgConnection,
    PgPool,
    Db,
    for_update = " FOR UPDATE"
);
lifecycle_store!(Postgres, PgConnection, for_update = " FOR UPDATE");
queue_writer!(PgPool, PgConnection, for_update = " FOR UPDATE");
dashboard_store!(Postgres);
peers_store!(Postgres);
relays_store!(Postgres);
