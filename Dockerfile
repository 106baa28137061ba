# One image with both binaries: `etcd-operator` (the entrypoint) and `etcd-server`, which the
# operator's StatefulSets run (command: etcd-server). Build from the repository root:
#   docker build -t ghcr.io/rustops/etcd-operator:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc for etcd-client's build script comes from the protoc-bin-vendored crate
# (.cargo/config.toml), so no system package is needed.
RUN cargo build --release --locked -p etcd-operator -p etcd-server \
    && cp target/release/etcd-operator target/release/etcd-server /usr/local/bin/

# glibc and libgcc only, no shell; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/etcd-operator /usr/local/bin/etcd-server /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcd-operator"]
CMD ["run"]
LABEL org.opencontainers.image.title="etcd-operator" \
      org.opencontainers.image.description="etcd-operator and etcd-server: a Kubernetes operator for etcd clusters, and its etcd-compatible server" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/rustops/etcd-operator"
