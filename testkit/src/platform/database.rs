//! The platform's database: its URLs and connections by login, rows stored, compaction,
//! and the rollups as comparable text.

use super::{Platform, WAIT};
use crate::eventually;
use std::sync::atomic::{AtomicI64, Ordering};

impl Platform {
    /// A new connection to the database `events`, as the `postgres` superuser.
    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.pg.connect("events").await
    }

    /// `postgres://<user>@127.0.0.1:<port>/events<query>`: the database as another login
    /// (no password), `query` being empty or `?sslmode=...`.
    pub fn database_url_as(&self, user: &str, query: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/events{query}",
            self.pg.port()
        )
    }

    /// `?sslmode=verify-full&sslrootcert=<PostgreSQL's certificate>`: the query of a URL
    /// that checks the server as a deployment should. Fails unless PostgreSQL serves TLS
    /// ([`PlatformBuilder::postgres_tls`](super::PlatformBuilder::postgres_tls)).
    pub fn verify_full(&self) -> anyhow::Result<String> {
        let cert = self
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this platform's PostgreSQL serves no TLS"))?
            .cert();
        Ok(format!(
            "?sslmode=verify-full&sslrootcert={}",
            cert.display()
        ))
    }

    /// A new connection to the database `events` as the login `user`, in plain text (so
    /// on a plain cluster only) and without a password.
    pub async fn connect_as(&self, user: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url_as(user, ""), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Rows in `events`, or 0 before the table exists.
    pub async fn row_count(&self) -> i64 {
        match self.db().await {
            Ok(db) => db
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Waits until `events` holds exactly `n` rows (failing early if it holds more).
    pub async fn wait_rows(&self, n: i64) -> anyhow::Result<()> {
        let last = AtomicI64::new(-1);
        let r = eventually(&format!("{n} rows"), WAIT, || async {
            let c = self.row_count().await;
            last.store(c, Ordering::Relaxed);
            (c >= n).then_some(c)
        })
        .await;
        match r {
            Ok(c) => {
                anyhow::ensure!(c == n, "expected exactly {n} rows, found {c}");
                Ok(())
            }
            Err(e) => Err(e.context(format!("found {} rows", last.load(Ordering::Relaxed)))),
        }
    }

    /// Waits until no slot is marked dirty: every per-user block is built.
    pub async fn wait_compacted(&self) -> anyhow::Result<()> {
        let db = self.db().await?;
        eventually("every slot compacted", WAIT, || async {
            let dirty: i64 = db
                .query_one("SELECT count(*) FROM user_sets_dirty", &[])
                .await
                .ok()?
                .get(0);
            (dirty == 0).then_some(())
        })
        .await
    }
}

/// Every rollup row, in a stable order, as text (exact decimals): equal lists mean equal
/// rollups, whatever the byte layout of the per-user sets.
pub async fn rollups(db: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for table in ["rollup_events", "rollup_series", "rollup_campaigns"] {
        let rows = db
            .query(
                &format!("SELECT t::text FROM {table} t ORDER BY t::text"),
                &[],
            )
            .await?;
        out.extend(
            rows.iter()
                .map(|r| format!("{table} {}", r.get::<_, String>(0))),
        );
    }
    let rows = db
        .query(
            "SELECT level, block, dim, source, funnel_stage, event_type, value, context, users,
                    events, revenue::text
             FROM user_sets ORDER BY 1, 2, 3, 4, 5, 6, 7, 8",
            &[],
        )
        .await?;
    for r in rows {
        let users: Vec<u32> = user_sets::decode_bitmap(r.get(8))
            .map_err(anyhow::Error::msg)?
            .iter()
            .collect();
        let key: Vec<String> = (2..8).map(|i| r.get::<_, String>(i)).collect();
        out.push(format!(
            "user_sets {} {} {key:?} {users:?} {} {}",
            r.get::<_, i16>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(9),
            r.get::<_, String>(10)
        ));
    }
    let rows = db
        .query(
            "SELECT level, block, source, totals FROM user_totals ORDER BY 1, 2, 3",
            &[],
        )
        .await?;
    for r in rows {
        let mut totals = std::collections::BTreeMap::new();
        user_sets::decode_totals(r.get(3), &mut totals).map_err(anyhow::Error::msg)?;
        out.push(format!(
            "user_totals {} {} {} {totals:?}",
            r.get::<_, i16>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2)
        ));
    }
    Ok(out)
}
