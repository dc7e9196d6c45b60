//! Applying the numbered migrations of `sql/` (`worker migrate`, or at start-up). A
//! transaction-scoped advisory lock serialises workers that start together: the second
//! waits, then finds nothing left to apply.

use service_kit::schema::{MIGRATIONS, applied_version, latest_version};
use tokio_postgres::error::SqlState;

/// Arbitrary, fixed key of the migration lock ("events" in ASCII).
const LOCK_KEY: i64 = 0x6576_656e_7473;

/// Applies every migration not yet applied, in one transaction. Returns the version.
/// A database already current is only read (no DDL, no lock), so a role that may not
/// change the schema, such as the worker's writer, gets its answer too.
pub async fn run(client: &mut tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    let applied = applied_version(client).await?;
    if applied >= latest_version() {
        return Ok(applied);
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let mut version = applied;
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tracing::info!(version = m.version, name = m.name, "Applying migration");
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        version = m.version;
    }
    tx.commit().await?;
    Ok(version)
}

/// Whether a failed migration says the role may not change the schema (SQLSTATE 42501:
/// no CREATE on the schema, not the owner of a table), rather than a passing failure.
pub fn is_not_allowed(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
}
