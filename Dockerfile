# syntax=docker/dockerfile:1
# slotway: one binary — cluster node, proxy, cluster admin, `up`.
#   docker build -t slotway .
#   docker run --rm -p 6379:6379 -p 16379:16379 slotway          # one node
#   docker run --rm -p 7777:7777 -p 9121:9121 slotway proxy \
#     --listen 0.0.0.0:7777 --nodes 10.0.1.1:6379,10.0.1.2:6379 --metrics 0.0.0.0:9121
#   docker compose up --build                                     # 3+3 cluster + proxy

# --- build: the release binary -------------------------------------------
FROM rust:1-slim-bookworm AS build
# The vendored Lua (mlua) and jemalloc are compiled from C sources. Versions
# come from the pinned base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies in their own layer: only a Cargo.toml/Cargo.lock change
# rebuilds them. Placeholder sources stand in for every declared target.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > bench/micro.rs \
    && echo 'fn main() {}' > bench/plot.rs \
    && cargo build --release --locked --bin slotway \
    && rm -rf src bench
COPY . .
# The real sources must look newer than the placeholder build's outputs.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin slotway

# --- runtime: the binary and a default node config, not root ---------------
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 slotway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home slotway \
    && mkdir -p /data /etc/slotway \
    && chown 10001:10001 /data
COPY --from=build /src/target/release/slotway /usr/local/bin/slotway
COPY config/node.conf /etc/slotway/node.conf
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 6379 node clients, 16379 its cluster bus (client port + 10000),
# 7777 proxy clients, 9121 proxy /metrics and /healthz.
EXPOSE 6379 16379 7777 9121
ENTRYPOINT ["slotway"]
# A node in a container listens on every interface. In a cluster, bind the
# container's own address instead (see docker-compose.yml): a node announces
# the first address it binds.
CMD ["node", "/etc/slotway/node.conf", "--dir", "/data", "--bind", "0.0.0.0", "--protected-mode", "no"]
