//! How the services reach PostgreSQL: as members of the least-privileged roles the
//! migrations create (`events_writer` for the worker, `events_reader` for analytics),
//! with only `worker migrate` using the schema's owner; and over TLS as the URL's
//! `sslmode` and `sslrootcert` say. Real nats-server and PostgreSQL clusters, real
//! services, the real `worker` binary for `worker migrate`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod roles;
mod tls;
