-- The services' login users, members of the roles the migrations create
-- (sql/0011_roles.sql): the worker's in events_writer, analytics' in events_reader. Run it
-- after `worker migrate`, as the owner or an administrator (CREATEROLE); it is idempotent
-- and sets the passwords again, so it also rotates them:
--
--   WORKER_DB_PASSWORD=... ANALYTICS_DB_PASSWORD=... \
--     psql "postgres://owner@host/events" -f deploy/postgres/login-users.sql
--
-- Read from the environment (psql 15 or newer): WORKER_DB_USER (default events_worker),
-- WORKER_DB_PASSWORD, ANALYTICS_DB_USER (default events_analytics),
-- ANALYTICS_DB_PASSWORD. An empty or unset password leaves the user without one (for
-- `trust` or certificate authentication, as scripts/run-local.sh uses). A password may
-- also be given as a SCRAM verifier (`SCRAM-SHA-256$...`), so the clear text never
-- reaches the server or its statement log.
\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = warning;
\set worker_user events_worker
\set worker_password ''
\set analytics_user events_analytics
\set analytics_password ''
-- \getenv leaves the variable as it is when the environment has no such name.
\getenv worker_user WORKER_DB_USER
\getenv worker_password WORKER_DB_PASSWORD
\getenv analytics_user ANALYTICS_DB_USER
\getenv analytics_password ANALYTICS_DB_PASSWORD

SELECT format('CREATE ROLE %I LOGIN', u)
FROM (VALUES (:'worker_user'), (:'analytics_user')) AS v(u)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = u)
\gexec

-- `PASSWORD NULL` when empty: no password.
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', u, nullif(p, ''))
FROM (VALUES (:'worker_user', :'worker_password'),
             (:'analytics_user', :'analytics_password')) AS v(u, p)
\gexec

SELECT format('GRANT events_writer TO %I', :'worker_user')
\gexec
SELECT format('GRANT events_reader TO %I', :'analytics_user')
\gexec
