# syntax=docker/dockerfile:1
#
# roomcast container image: one fully static binary on `scratch`, running as a non-root user.
#
#   docker build -t roomcast .
#   docker run --rm -p 8080:8080 roomcast
#   docker run --rm -p 8080:8080 -e REDIS_URL=redis://redis:6379 -e ROOMCAST_API_KEY=secret roomcast
#
# The binary is linked statically against glibc (`-C target-feature=+crt-static`), exactly as
# `scripts/static-build` does it locally, so it needs no shared library, no shell and no libc
# in the image. See deploy/README.md.

ARG RUST_VERSION=1

# ------------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder

# amd64 -> x86_64-unknown-linux-gnu, arm64 -> aarch64-unknown-linux-gnu (built natively per
# platform by `docker buildx build --platform linux/amd64,linux/arm64`).
ARG TARGETARCH
WORKDIR /src
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Only what the build needs (see .dockerignore): the manifest, lockfile, sources and the
# embedded web page.
COPY . .

# The registry and target caches persist between builds (BuildKit cache mounts), so a
# source-only change does not rebuild every dependency. The binary is copied out of the cached
# target dir because a cache mount is not part of the layer; the build fails if it is not
# static (scratch has no dynamic loader). getrandom_backend="linux_getrandom" makes the
# getrandom crate call glibc's getrandom() directly instead of looking it up with dlsym (which
# fails in a static binary and falls back to /dev/urandom). /out/rootfs is the whole final file system: the
# binary, CA roots, an empty /tmp (1777) and the working directory /data owned by the runtime
# user. It is copied as one tree because COPY keeps the modes and owners of what is inside the
# source directory, not of the directory it creates.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
      cargo build --release --locked --bin roomcast --target "$triple"; \
    install -D -m 0755 "target/$triple/release/roomcast" /out/rootfs/roomcast; \
    strip /out/rootfs/roomcast; \
    file -b /out/rootfs/roomcast | grep -Eq 'static(-pie)? linked'; \
    /out/rootfs/roomcast --version; \
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/rootfs/etc/ssl/certs/ca-certificates.crt; \
    install -d -m 1777 /out/rootfs/tmp; \
    install -d -m 0750 -o 65532 -g 65532 /out/rootfs/data

# ------------------------------------------------------------------------------------------------
FROM scratch

# /roomcast, /etc/ssl/certs/ca-certificates.crt (outgoing TLS: rediss://, ACME), /tmp, /data
COPY --from=builder /out/rootfs/ /

# Numeric non-root user (the distroless "nonroot" uid): works with Kubernetes runAsNonRoot
# without an /etc/passwd entry. 8080 is above 1024, so no capability is needed to bind it.
USER 65532:65532
WORKDIR /data
ENV ROOMCAST_LISTEN=0.0.0.0:8080 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080

# scratch has no curl or shell: the binary probes itself (GET /healthz on its own listener,
# exit 0 when it answers 200). Kubernetes uses its own httpGet probes instead (deploy/kubernetes).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/roomcast", "healthcheck"]

# SIGTERM drains (readyz turns 503, clients are told to reconnect elsewhere) within
# --shutdown-timeout-s (default 10 s): keep `docker stop -t` / terminationGracePeriodSeconds above it.
STOPSIGNAL SIGTERM
# No CMD: `roomcast` alone serves, so `docker run IMAGE --redis-url ...` passes flags straight
# to the server, and `docker run IMAGE publish ROOM DATA` runs the CLI.
ENTRYPOINT ["/roomcast"]
