# syntax=docker/dockerfile:1
#
# nodeguard's image: one static binary on distroless/static (no shell, no package manager,
# no libc). Base images are pinned by digest so a rebuild gives the same bases; bump the
# digests deliberately (e.g. `crane digest rust:1-bookworm`) in a reviewed commit.
#
#   docker build -t nodeguard:dev .

ARG RUST_IMAGE=rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12@sha256:bca175dfe8e21d4e4de21dd8b7eb0f78b32e0a2e7248de06e3b0f7c2dab6b1f5

FROM ${RUST_IMAGE} AS builder
# musl gives a fully static binary (ring's C parts build with musl-gcc).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p nodeguard --bin nodeguard \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/nodeguard /out/nodeguard

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="nodeguard" \
      org.opencontainers.image.description="Per-node Kubernetes security agent: what really runs in each container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/nodeguard" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12"
COPY --from=builder /out/nodeguard /nodeguard
# Root in the host user namespace with three added capabilities is what the DaemonSet grants;
# see README "Privileges".
USER 0:0
EXPOSE 9717
ENTRYPOINT ["/nodeguard"]
CMD ["run"]
