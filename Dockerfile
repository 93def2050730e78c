# mcp-sse-bridge container image.
#   docker build -t mcp-sse-bridge:0.1.0 .
#   docker run --rm -p 8080:8080 mcp-sse-bridge:0.1.0 --upstream http://legacy:3001/sse
# Build stage: the same Debian packages and meson build as the README.
# Runtime stage: only the binary, the shared libraries it links, the CA
# bundle (for https upstreams) and nothing else; runs as a non-root user.
ARG DEBIAN=bookworm

FROM debian:${DEBIAN}-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ meson ninja-build pkg-config cmake \
      libcpp-httplib-dev libssl-dev libsimdjson-dev nlohmann-json3-dev libcli11-dev \
      libboost1.81-dev libjemalloc-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY meson.build meson_options.txt ./
COPY include include
COPY src src
COPY examples examples
COPY tools tools
RUN meson setup /build -Dbuildtype=release -Dtests=false -Dinterop=false \
 && ninja -C /build mcp-sse-bridge \
 && strip /build/mcp-sse-bridge
# Gather the binary and exactly the shared objects it loads (ldd), plus the
# dynamic loader and the CA bundle.
RUN set -eu; mkdir -p /out/usr/local/bin /out/etc/ssl/certs /out/tmp; \
    cp /build/mcp-sse-bridge /out/usr/local/bin/; \
    for lib in $(ldd /build/mcp-sse-bridge | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}'); do \
      mkdir -p "/out$(dirname "$lib")"; cp -L "$lib" "/out$lib"; \
    done; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > /out/etc/passwd; \
    echo 'nonroot:x:65532:' > /out/etc/group; \
    chmod 1777 /out/tmp

FROM scratch
COPY --from=build /out/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    MCP_BRIDGE_LISTEN=0.0.0.0:8080 \
    MCP_BRIDGE_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/mcp-sse-bridge", "--probe", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/mcp-sse-bridge"]
