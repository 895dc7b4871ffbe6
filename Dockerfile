# syntax=docker/dockerfile:1
# Build stage: release binary, dependencies cached in their own layer.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends make gcc g++ && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > bench/micro.rs \
    && cargo build --release --locked || true
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# Runtime stage: just the binary and a default config, as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data slotway && mkdir -p /data /etc/slotway && chown slotway /data
COPY --from=build /src/target/release/slotway /usr/local/bin/slotway
COPY config/node.conf /etc/slotway/node.conf
USER slotway
WORKDIR /data
# client, cluster bus, proxy, proxy metrics
EXPOSE 6379 16379 7777 9121
ENTRYPOINT ["slotway"]
CMD ["node", "/etc/slotway/node.conf", "--dir", "/data", "--bind", "0.0.0.0", "--protected-mode", "no"]
