-- Least privilege: the services connect as members of two roles, not as the owner of the
-- schema; only migrations use the owner (`worker migrate`, or the worker's start-up
-- migration through MIGRATION_DATABASE_URL).
--
--   events_writer  what the worker does at run time: store events (insert only: a stored
--                  event is never changed), keep the rollups (upserts) and the per-user
--                  sets (upserts, the compactor's deletes), assign user keys, take
--                  advisory locks (no privilege needed). It owns nothing, so it can
--                  neither ALTER, DROP nor TRUNCATE: `rebuild_rollups()` truncates, so it
--                  is the owner's (`worker rebuild-rollups` connects as migrations do).
--   events_reader  SELECT only (analytics; readiness reads schema_migrations).
--
-- Both are NOLOGIN group roles: deployments create login users in them
-- (deploy/postgres/login-users.sql, used by scripts/run-local.sh and docker-compose.yml).
-- Roles belong to the cluster, not to the database, so they are created only when absent:
-- an administrator may have created them already (when the migration user lacks
-- CREATEROLE), and the migration of another database of the cluster may create them at
-- the same moment.
--
-- Grants are explicit, table by table, here and in every later migration that creates a
-- table, rather than ALTER DEFAULT PRIVILEGES: default privileges only cover objects
-- created by the role that set them (a migration applied by another admin login would
-- create tables the services cannot use, silently), and they cannot say that `events` is
-- insert-only while the rollups are updated. A test checks that every table has grants
-- for both roles, so a forgotten one fails there rather than in production.
DO $$
DECLARE
    r name;
BEGIN
    FOREACH r IN ARRAY ARRAY['events_writer', 'events_reader']::name[] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by the migration of another database
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO events_writer, events_reader', current_schema());
    -- Before PostgreSQL 15 every role may create tables in `public`, and would own them.
    -- (Only a warning when the migration user does not own the schema.)
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
END
$$;

GRANT SELECT ON schema_migrations, events, rollup_events, rollup_series, rollup_campaigns,
    user_keys, user_sets, user_totals, user_sets_dirty, user_sets_pending
    TO events_reader, events_writer;

GRANT INSERT ON events, user_keys TO events_writer;
GRANT INSERT, UPDATE ON rollup_events, rollup_series, rollup_campaigns TO events_writer;
GRANT INSERT, UPDATE, DELETE ON user_sets, user_totals, user_sets_dirty TO events_writer;
GRANT INSERT, DELETE ON user_sets_pending TO events_writer;
-- The identity columns' sequences (an identity needs no grant to insert; a later
-- `nextval` or a column turned into a plain default would).
GRANT USAGE, SELECT ON SEQUENCE user_keys_user_key_seq, user_sets_pending_batch_seq
    TO events_writer;
