# syntax=docker/dockerfile:1
# One image with the gateway and the sample services:
#   docker build -t gateway .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 -v "$PWD/config:/etc/gateway:ro" gateway
# The sample services run from the same image with another command, e.g. `member`.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway -p backends \
 && mkdir -p /out \
 && for bin in gateway member product order; do \
      if [ -f "target/release/$bin" ]; then cp "target/release/$bin" /out/; fi; \
    done

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
