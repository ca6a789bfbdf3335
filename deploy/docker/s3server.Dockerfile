# syntax=docker/dockerfile:1
# The project's S3-compatible server (infra/s3server: gofakes3's protocol over an on-disk store,
# Apache-2.0/MIT; not MinIO, which is AGPL). Build from the repository root:
#   docker build -f deploy/docker/s3server.Dockerfile -t valuedrift/s3server:dev .
# The server checks no credentials and refuses a non-loopback -host (infra/s3server/main.go), so it
# listens on 127.0.0.1 inside its container; in deploy/compose the workers share its network
# namespace (network_mode: service:s3) and reach it on 127.0.0.1:9000. It is for a single-host
# deployment: point a cluster at a real bucket instead.

FROM golang:1.24.6-bookworm AS build
WORKDIR /src
COPY infra/s3server/go.mod infra/s3server/go.sum ./
RUN go mod download
COPY infra/s3server/*.go ./
# go.sum pins every module; no VCS stamp; a static binary.
RUN CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local \
    go build -trimpath -ldflags="-s -w" -o /out/s3server .

FROM alpine:3.22.2
RUN addgroup -g 10001 s3 && adduser -D -H -u 10001 -G s3 s3 \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /out/s3server /usr/local/bin/s3server
USER 10001:10001
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/s3server", "-host", "127.0.0.1", "-port", "9000", "-dir", "/data"]
CMD ["-bucket", "valuedrift"]
