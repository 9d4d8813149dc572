# whalebt live runner: `live run` in a slim, non-root image with a /health check.
#   docker build -t whalebt-live:0.1.0 .
#   docker run --rm -p 9100:9100 whalebt-live:0.1.0 run --config /etc/whalebt/config.yaml \
#       --exchange binance_usdm --symbols BTCUSDT --http-port 9100 --journal /journal/journal.jsonl
# Base image pinned by tag; pin it by digest too (python:3.11.7-slim-bookworm@sha256:...) in CI.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# the whole environment is pinned in requirements.lock; install it before the sources for layer caching
COPY requirements.lock ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --require-virtualenv -r requirements.lock
COPY pyproject.toml README.md ./
COPY signals ./signals
COPY datasets ./datasets
COPY bt ./bt
COPY live ./live
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/live --help > /dev/null

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 whale && useradd --uid 10001 --gid whale --create-home --shell /usr/sbin/nologin whale \
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
