# One image with the four searchtree binaries: the operator CLI `searchtree`
# and the nodes `searchtree-leaf`, `searchtree-parent`, `searchtree-root`.
#
#   docker build -t searchtree .
#   docker run --rm searchtree searchtree --help
#
# The .proto files compile with the pure-Rust `protox`: the build needs no
# system protoc. The bundled corpus is copied in too, so the Kubernetes
# example (deploy/kubernetes/) can build its shards without a download.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/searchtree target/release/searchtree-leaf \
          target/release/searchtree-parent target/release/searchtree-root /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 searchtree \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin searchtree
COPY --from=build /out/searchtree /out/searchtree-leaf /out/searchtree-parent /out/searchtree-root /usr/local/bin/
COPY corpus-tools/data/wiki-summaries.jsonl.gz /usr/share/searchtree/wiki-summaries.jsonl.gz
USER 10001:10001
# gRPC, and HTTP (Prometheus metrics at /metrics; the root's status page).
EXPOSE 7000 9100
CMD ["searchtree", "--help"]
