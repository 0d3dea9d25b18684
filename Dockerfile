# syntax=docker/dockerfile:1
# The job-executor image: one static binary, used as the operator (`run`) and as the init
# container that stages task files (`stage-files`). Build: docker build -t job-executor .
#
# The build stage runs on the target platform (no cross-compiling): it builds for
# <arch>-unknown-linux-musl, so the binary is static and the final image needs no libc.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
# The workspace: the operator crate and kube-sim (a workspace member, needed for Cargo to load
# the workspace; it is not built).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Benchmark targets are named in Cargo.toml, so Cargo needs them to load the manifest.
COPY benches ./benches
COPY tests/kube-sim/Cargo.toml ./tests/kube-sim/Cargo.toml
COPY tests/kube-sim/src ./tests/kube-sim/src
COPY scripts/build-static ./scripts/build-static
RUN scripts/build-static /out/job-executor

# distroless/static: no shell, no package manager, CA certificates and /etc/passwd with the
# nonroot user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/job-executor /job-executor
USER 65532:65532
# Ingest (CloudEvents) and admin (/livez, /readyz, /metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/job-executor"]
CMD ["run"]
