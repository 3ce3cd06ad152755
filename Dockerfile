# syntax=docker/dockerfile:1
# One image with the gateway and the sample services:
#   docker build -t gateway .
# The default config (/etc/gateway/gateway.compose.yaml) is the docker-compose demo's:
# it listens on 0.0.0.0 (inside a container 127.0.0.1 is the container's own loopback,
# unreachable through -p) and expects the hosts redis and member; `docker compose up`
# runs it with them. Your own config, mounted over /etc/gateway (hot-reloaded):
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v "$PWD/my-config:/etc/gateway:ro" -e GATEWAY_CONFIG=/etc/gateway/gateway.yaml gateway
# where my-config/gateway.yaml listens on 0.0.0.0:8080 (admin 0.0.0.0:9090 with a token).
# The sample services run from the same image with another command, e.g. `member`; they
# keep their SQLite files in /var/lib/gateway/data (DATA_DIR), owned by uid 10001.

FROM rust:1.95-bookworm AS build
# Unpinned on purpose: the base image fixes the Debian release, and Debian drops a
# package's old version from its mirrors at each point release, so a pin breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BACKENDS_FEATURES=kafka builds the sample services with the Kafka event log
# (librdkafka is compiled from source: needs cmake and a C/C++ compiler).
ARG BACKENDS_FEATURES=""
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p backends --bins \
      ${BACKENDS_FEATURES:+--features backends/$BACKENDS_FEATURES} \
 && mkdir -p /out \
 && cp target/release/gateway target/release/member target/release/product target/release/order /out/

FROM debian:bookworm-slim
# Unpinned on purpose (see the build stage).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gateway --no-create-home \
      --shell /usr/sbin/nologin gateway \
 && mkdir -p /var/lib/gateway/data \
 && chown -R 10001:10001 /var/lib/gateway \
 && chmod 0750 /var/lib/gateway /var/lib/gateway/data
COPY --from=build /out/ /usr/local/bin/
# Read-only for the process: the config is data it reads, never writes.
COPY config/ /etc/gateway/
# A new named volume mounted on /var/lib/gateway/data starts as a copy of that
# directory, ownership included, so the services (uid 10001) can create their files.
# (No VOLUME line: it would give every container, the gateway's too, an anonymous volume.)
ENV GATEWAY_CONFIG=/etc/gateway/gateway.compose.yaml \
    DATA_DIR=/var/lib/gateway/data
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/gateway
EXPOSE 8080 9090
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gateway", "run"]
