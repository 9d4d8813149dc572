# whalebt live runner: `live run` in a slim, non-root image with a /health check.
#   make image          builds it with docker, podman or buildah (scripts/image.sh, docs/azure.md)
#   make image-smoke    runs it against replayed real frames (scripts/image_smoke.sh)
#   docker run --rm -p 9100:9100 whalebt-live:0.1.0 run --config /etc/whalebt/config.yaml \
#       --exchange binance_usdm --symbols BTCUSDT --http-port 9100 --journal /journal/journal.jsonl
# PYTHON_IMAGE: a Debian bookworm image with Python 3.11 (`python` on PATH). Pulled from a registry,
# pass it pinned by digest (python:3.11.7-slim-bookworm@sha256:...); scripts/image.sh resolves and
# records the digest. Without a registry, scripts/base_image.sh bootstraps one from the Debian archive.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The package index the build machine uses (scripts/image.sh passes its pip configuration on).
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
WORKDIR /src
# the whole environment is pinned in requirements.lock; install it before the sources for layer caching
# (less the spark extra, pyspark and py4j: the live runner does not use Spark).
# A CA bundle for the index (a TLS-intercepting proxy) comes in as the build secret `pipcert` and is not
# kept in the image.
COPY requirements.lock ./
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi; \
    grep -v -E '^(pyspark|py4j)==' requirements.lock > /tmp/requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-virtualenv -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY whalebt ./whalebt
COPY signals ./signals
COPY datasets ./datasets
COPY bt ./bt
COPY live ./live
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi; \
    /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/live --help > /dev/null

FROM ${PYTHON_IMAGE}
# lightgbm (models) needs the OpenMP runtime; the bootstrapped base already has it
RUN if ! ldconfig -p | grep -q 'libgomp\.so\.1'; then \
        apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 whale && useradd --uid 10001 --gid whale --create-home --shell /usr/sbin/nologin whale \
    && mkdir -p /journal && chown whale:whale /journal
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    WHALEBT_HTTP_HOST=0.0.0.0
USER whale
WORKDIR /home/whale
EXPOSE 9100
VOLUME ["/journal"]
# /health answers 200 when warmed up, connected and fresh, 503 otherwise (`live run --http-port 9100`)
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/health', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["live"]
CMD ["run", "--help"]
