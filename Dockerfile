# syntax=docker/dockerfile:1
# Multi-stage build of the one Nozzle image used by both Fly process groups.
#
#   go       builds bin/nozzle (CGO_ENABLED=0) and the CPU engine library
#   cuda     builds the CUDA engine library (sm_80 A100, sm_89 L40S, sm_90 H100)
#   final    CUDA runtime base (cuBLAS included) + the binary and both
#            libraries; the gateway process simply never loads CUDA.

FROM golang:1.26-bookworm AS go
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends gcc make && rm -rf /var/lib/apt/lists/*
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make bin/nozzle build/libnozzle_cpu.so

FROM nvidia/cuda:12.4.1-devel-ubuntu22.04 AS cuda
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY Makefile ./
COPY csrc ./csrc
RUN make build/libnozzle_cuda.so CUDA_ARCHS="-gencode arch=compute_80,code=sm_80 -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=sm_90"

FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data nozzle && mkdir -p /data /models && chown nozzle /data /models
COPY --from=go /src/bin/nozzle /app/nozzle
COPY --from=go /src/build/libnozzle_cpu.so /app/libnozzle_cpu.so
COPY --from=cuda /src/build/libnozzle_cuda.so /app/libnozzle_cuda.so
COPY scripts/container-entrypoint.sh /app/entrypoint
ENV NOZZLE_LOG_FORMAT=json
EXPOSE 8080 8081
# Starts as root only to hand the volumes mounted over /data and /models
# (root's) to the nozzle user, then runs the command as that user.
ENTRYPOINT ["/app/entrypoint"]
CMD ["/app/nozzle", "serve", "--addr", "0.0.0.0:8080", "--data", "/data"]
