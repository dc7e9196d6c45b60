# syntax=docker/dockerfile:1.7
#
# One Dockerfile for the whole workspace (docs/operations.md, "Programs").
#
#   build       compiles every binary of the workspace once (release, --locked)
#   runtime     distroless cc (glibc, libgcc, CA certificates; no shell, no package
#               manager, no curl), user 10001
#   ingestion | worker | analytics | publisher
#               one small image per binary, picked with --target:
#
#   docker build --target ingestion -t events-platform/ingestion .
#
# docker-compose.yml builds all four targets from this file; BuildKit shares the `build`
# stage between them, so the workspace is compiled once.
#
# Base images: tags, not yet digests (no registry was reachable where this was written).
# Pin both before a production build, `image:tag@sha256:<digest>`, the digest from
#   docker buildx imagetools inspect <image:tag>
# (scripts/lint-compose.py warns until they are pinned; docs/operations.md, "Deployment
# hardening"). Both are Debian 12 (glibc 2.36): the binaries link glibc and libgcc_s.

# The Rust release rust-toolchain.toml pins (the file is in the build context, so rustup
# would otherwise fetch that release inside the build).
# pin: docker buildx imagetools inspect rust:1.95.0-bookworm
ARG RUST_IMAGE=rust:1.95.0-bookworm
# pin: docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

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
# Nothing but the binary's own libraries and the CA certificates (TLS to a managed NATS or
# PostgreSQL): no shell, package manager or curl for an intruder to use. Health checks
# are the binaries' own `healthcheck` subcommand. The user is numeric (no /etc/passwd
# entry needed): the same uid as before distroless, so mounted secrets keep working.
ENV RUST_LOG=info \
    LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp

# ---------------------------------------------------------------------------------------
FROM runtime AS ingestion
COPY --from=build /out/ingestion /usr/local/bin/ingestion
USER 10001:10001
EXPOSE 3001
# The binary asks its own /health/readiness on HOST and PORT (3001 unless overridden).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ingestion", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ingestion"]

# ---------------------------------------------------------------------------------------
FROM runtime AS worker
COPY --from=build /out/worker /usr/local/bin/worker
USER 10001:10001
# Health and metrics only; the worker takes no traffic.
EXPOSE 3003
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/worker", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/worker"]

# ---------------------------------------------------------------------------------------
FROM runtime AS analytics
COPY --from=build /out/analytics /usr/local/bin/analytics
USER 10001:10001
EXPOSE 3002
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/analytics", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/analytics"]

# ---------------------------------------------------------------------------------------
# The publisher is a client with no HTTP port of its own: the image's check only proves the
# binary runs (compose starts it once ingestion is healthy).
FROM runtime AS publisher
COPY --from=build /out/publisher /usr/local/bin/publisher
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD ["/usr/local/bin/publisher", "--version"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/publisher"]
