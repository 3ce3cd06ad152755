# syntax=docker/dockerfile:1
# One image with the gateway and the sample services:
#   docker build -t gateway .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 -v "$PWD/config:/etc/gateway:ro" gateway
# The sample services run from the same image with another command, e.g. `member`.

FROM rust:1.95-bookworm AS build
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
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/gateway --create-home gateway
COPY --from=build /out/ /usr/local/bin/
COPY config/ /etc/gateway/
USER gateway
WORKDIR /var/lib/gateway
EXPOSE 8080 9090
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gateway", "run", "--config", "/etc/gateway/gateway.yaml"]
