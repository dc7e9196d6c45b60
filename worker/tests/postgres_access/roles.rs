//! The reader and writer roles, `worker migrate`, and a worker that may not migrate.

use crate::helpers::{
    ANALYTICS_USER, COMPACT_SOON, OWNER, WORKER_USER, create_login_users, events, platform, post,
    stats_total, wait_all_compacted,
};
use service_kit::schema::latest_version;
use tokio_postgres::error::SqlState;

/// The SQLSTATE of a statement that must fail, or a panic saying it succeeded.
async fn refused(db: &tokio_postgres::Client, sql: &str) -> SqlState {
    match db.batch_execute(sql).await {
        Ok(()) => panic!("{sql:?} succeeded"),
        Err(e) => e.code().cloned().unwrap_or_else(|| panic!("{sql:?}: {e}")),
    }
}

async fn applied_migrations(db: &tokio_postgres::Client) -> Vec<(i32, String)> {
    db.query(
        "SELECT version, applied_at::text FROM schema_migrations ORDER BY version",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn worker_migrate_applies_every_migration_as_the_owner_and_a_second_run_changes_nothing() {
    let p = platform().await.unwrap();
    let owner = p.database_url_as(OWNER, "");
    p.migrate(&owner).await.unwrap();
    let db = p.db().await.unwrap();
    let first = applied_migrations(&db).await;
    assert_eq!(first.len() as i32, latest_version());
    assert_eq!(first.last().map(|m| m.0), Some(latest_version()));

    p.migrate(&owner).await.unwrap();
    assert_eq!(
        applied_migrations(&db).await,
        first,
        "nothing applied again"
    );

    // Every table is the owner's; the services' roles own nothing.
    let owners: Vec<String> = db
        .query(
            "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(owners, [OWNER]);
}

#[tokio::test]
async fn every_table_is_readable_by_both_roles_and_writable_by_the_writer_alone() {
    let p = platform().await.unwrap();
    p.migrate(&p.database_url_as(OWNER, "")).await.unwrap();
    let db = p.db().await.unwrap();
    // A table a later migration adds without its grants fails here. The partitions of
    // `events` are reached through it, which checks its grants alone.
    let rows = db
        .query(
            "SELECT tablename::text,
                    has_table_privilege('events_reader', oid, 'SELECT'),
                    has_table_privilege('events_reader', oid, 'INSERT, UPDATE, DELETE, TRUNCATE'),
                    has_table_privilege('events_writer', oid, 'SELECT'),
                    has_table_privilege('events_writer', oid, 'INSERT'),
                    has_table_privilege('events_writer', oid, 'TRUNCATE')
             FROM pg_tables t JOIN pg_class c ON c.relname = t.tablename
             WHERE schemaname = 'public' AND NOT c.relispartition ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 10, "{} tables", rows.len());
    for r in rows {
        let table: String = r.get(0);
        assert!(r.get::<_, bool>(1), "the reader reads {table}");
        assert!(
            !r.get::<_, bool>(2),
            "the reader writes nothing, {table} included"
        );
        assert!(r.get::<_, bool>(3), "the writer reads {table}");
        assert_eq!(
            r.get::<_, bool>(4),
            !["schema_migrations", "events_retention"].contains(&table.as_str()),
            "the writer inserts into {table} unless the migrations or the owner's \
             retention function alone write it"
        );
        assert!(
            !r.get::<_, bool>(5),
            "the writer truncates nothing, {table} included"
        );
    }
}

#[tokio::test]
async fn analytics_connection_can_select_but_not_insert_drop_or_create() {
    let p = platform().await.unwrap();
    p.migrate(&p.database_url_as(OWNER, "")).await.unwrap();
    create_login_users(&p).await.unwrap();
    let reader = p.connect_as(ANALYTICS_USER).await.unwrap();

    let count: i64 = reader
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    reader
        .query_one("SELECT count(*) FROM rollup_events", &[])
        .await
        .unwrap();
    let insert = "INSERT INTO events (event_id, event_time, source, funnel_stage, event_type,
                                      user_id, data)
                  VALUES ('x', now(), 'facebook', 'top', 'ad.view', 'u', '{}')";
    assert_eq!(
        refused(&reader, insert).await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    for sql in [
        "DROP TABLE events",
        "DELETE FROM rollup_events",
        "TRUNCATE user_sets",
        "CREATE TABLE mine (x int)",
    ] {
        assert_eq!(
            refused(&reader, sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
}

#[tokio::test]
async fn the_worker_stores_and_compacts_events_as_the_writer_which_cannot_drop_or_alter() {
    let p = platform().await.unwrap();
    p.migrate(&p.database_url_as(OWNER, "")).await.unwrap();
    create_login_users(&p).await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    // MIGRATE_ON_START is left on: with the schema current the worker changes nothing.
    let worker = p
        .start_worker_on(&p.database_url_as(WORKER_USER, ""), &[COMPACT_SOON])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    let analytics = p
        .start_analytics_on(&p.database_url_as(ANALYTICS_USER, ""), &[])
        .await
        .unwrap();
    p.wait_ready(analytics.port).await.unwrap();

    let sent = events("writer", 40);
    assert_eq!(post(&p, ingestion.port, sent).await.unwrap(), 202);
    p.wait_rows(40).await.unwrap();
    wait_all_compacted(&p).await.unwrap();
    assert_eq!(stats_total(&p, analytics.port).await.unwrap(), 40);

    // The worker made the days' partitions (the past week, today and three days ahead)
    // through the owner's function, which it may call but not change.
    let days: i64 = p
        .db()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(days, 7 + 1 + 3);

    let writer = p.connect_as(WORKER_USER).await.unwrap();
    for sql in [
        "DROP TABLE events",
        "DROP TABLE events_default",
        "DELETE FROM event_keys",
        "SELECT count(*) FROM events_default",
        "CREATE OR REPLACE FUNCTION prepare_event_partitions(a date, b date) RETURNS integer \
         LANGUAGE sql AS 'SELECT 0'",
        "ALTER TABLE events ADD COLUMN note text",
        "ALTER TABLE rollup_events DROP COLUMN revenue",
        "TRUNCATE rollup_events",
        "DELETE FROM events",
        "UPDATE events SET user_id = 'someone else'",
        "CREATE TABLE mine (x int)",
        "SELECT rebuild_rollups()",
    ] {
        assert_eq!(
            refused(&writer, sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    // ... and the pipeline still works after those refusals.
    assert_eq!(
        post(&p, ingestion.port, events("after", 4)).await.unwrap(),
        202
    );
    p.wait_rows(44).await.unwrap();

    analytics.stop().await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_worker_whose_role_may_not_migrate_waits_for_worker_migrate_and_says_so() {
    let p = platform().await.unwrap();
    // An administrator created the roles and the worker's login before any migration
    // (as on a managed PostgreSQL where the migration user may not create roles).
    p.db()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE events_writer NOLOGIN; CREATE ROLE events_reader NOLOGIN;
             CREATE ROLE {WORKER_USER} LOGIN IN ROLE events_writer"
        ))
        .await
        .unwrap();
    let writer_url = p.database_url_as(WORKER_USER, "");

    // `worker migrate` as the writer: refused by the database, a failure exit.
    let out = p
        .run_worker(&["migrate"], &[("DATABASE_URL", &writer_url)])
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");

    // The worker itself tries once (MIGRATE_ON_START), is refused, and waits.
    let worker = p.start_worker_on(&writer_url, &[]).await.unwrap();
    let reason = p
        .wait_not_ready(worker.port, "schema", "may not apply them")
        .await
        .unwrap();
    assert!(reason.contains("migrations pending"), "{reason}");
    assert!(reason.contains("permission denied"), "{reason}");

    p.migrate(&p.database_url_as(OWNER, "")).await.unwrap();
    p.wait_ready(worker.port).await.unwrap();
    let roles_created_beforehand_kept: i64 = p
        .db()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('events_writer', 'events_reader')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles_created_beforehand_kept, 2);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_worker_told_not_to_migrate_waits_even_as_the_owner() {
    let p = platform().await.unwrap();
    let owner = p.database_url_as(OWNER, "");
    let worker = p
        .start_worker_on(&owner, &["--migrate-on-start", "false"])
        .await
        .unwrap();
    let reason = p
        .wait_not_ready(worker.port, "schema", "MIGRATE_ON_START=false")
        .await
        .unwrap();
    assert!(reason.contains("version 0"), "{reason}");
    let tables: i64 = p
        .db()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the worker changed nothing");

    p.migrate(&owner).await.unwrap();
    p.wait_ready(worker.port).await.unwrap();
    worker.stop().await.unwrap();
}
