# syntax=docker/dockerfile:1.7
#
# One Dockerfile for the whole workspace (docs/operations.md, "Programs").
#
#   build       compiles every binary of the workspace once (release, --locked)
#   runtime     debian:bookworm-slim + ca-certificates + curl (HEALTHCHECK), user 10001
#   ingestion | worker | analytics | publisher
#               one small image per binary, picked with --target:
#
#   docker build --target ingestion -t events-platform/ingestion .
#
# docker-compose.yml builds all four targets from this file; BuildKit shares the `build`
# stage between them, so the workspace is compiled once.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace (minus what .dockerignore drops: target/, .git, .data, ...).
# Every member crate must be present for Cargo to resolve the workspace, and `sql/` is
# needed at compile time: migrations are embedded with include_str!("../../sql/...").
COPY . .
# Registry, git checkouts and target/ live in cache mounts (kept between builds), so the
# binaries are copied out of target/ within the same RUN.
RUN --mount=type=cache,id=cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=events-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && for bin in ingestion worker analytics publisher; do \
        install -m 0755 "target/release/$bin" "/out/$bin"; \
    done

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# curl is only for HEALTHCHECK; ca-certificates for TLS to managed NATS/PostgreSQL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app
ENV RUST_LOG=info \
    LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp

# ---------------------------------------------------------------------------------------
FROM runtime AS ingestion
COPY --from=build /out/ingestion /usr/local/bin/ingestion
USER 10001:10001
EXPOSE 3001
# PORT may be overridden; the check follows it (shell form on purpose).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT:-3001}/health/liveness" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ingestion"]

# ---------------------------------------------------------------------------------------
FROM runtime AS worker
COPY --from=build /out/worker /usr/local/bin/worker
USER 10001:10001
# Health and metrics only; the worker takes no traffic.
EXPOSE 3003
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT:-3003}/health/liveness" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/worker"]

# ---------------------------------------------------------------------------------------
FROM runtime AS analytics
COPY --from=build /out/analytics /usr/local/bin/analytics
USER 10001:10001
EXPOSE 3002
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT:-3002}/health/liveness" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/analytics"]

# ---------------------------------------------------------------------------------------
# The publisher is a client with no HTTP port of its own: the image's check only proves the
# binary runs; docker-compose.yml replaces it with "is my target (ingestion) ready".
FROM runtime AS publisher
COPY --from=build /out/publisher /usr/local/bin/publisher
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD ["/usr/local/bin/publisher", "--version"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/publisher"]
