# trackerd: the eye-tracking WebSocket server, for push sessions only by default (--source none):
# each client sends its own frames. A container has no camera, and the demo clip as a default
# would answer a client that forgot "source": "client" with a stranger's realistic eye_data.
# Build: docker build -t trackerd .
# Run:   docker run -p 5000:5000 -v trackerd-data:/data trackerd
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # numba caches compiled kernels here; the app user must be able to write it.
    NUMBA_CACHE_DIR=/var/cache/trackerd/numba \
    # Inside a container the server must listen on every interface to be reachable.
    HOST=0.0.0.0 \
    PORT=5000 \
    # A container has no camera: push sessions only, and start_tracking without
    # "source": "client" gets an error saying so. `docker run -e TRACKERD_SOURCE=demo` (or a
    # stream URL) to watch something of the server's own.
    TRACKERD_SOURCE=none \
    # The database (sessions, reports, the webhook outbox): on the volume below, so that
    # undelivered events outlive the container.
    TRACKERD_DATA_DIR=/data

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin trackerd \
    && mkdir -p /app /var/cache/trackerd/numba /data \
    && chown trackerd /var/cache/trackerd/numba /data
WORKDIR /app

# Dependencies first (from pyproject.toml alone), so a source change reuses this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p trackerd kernels && touch trackerd/__init__.py kernels/__init__.py \
    && pip install . && pip uninstall -y trackerd && rm -rf trackerd kernels build

COPY trackerd ./trackerd
COPY kernels ./kernels
RUN pip install --no-deps . && rm -rf build

USER 10001
EXPOSE 5000
# Without -v, Docker gives /data an anonymous volume: it survives a restart of the container,
# not its removal. Name one (-v trackerd-data:/data) or mount the platform's disk here.
VOLUME ["/data"]
# /healthz answers on the WebSocket's own port: 200, or 503 while the source is failing.
# With TRACKERD_CERTFILE set the port speaks TLS only, so the probe uses https; it skips
# verification, as its certificate names the public host, not 127.0.0.1 (set TLS through
# TRACKERD_CERTFILE rather than --certfile, or the probe cannot tell).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('TRACKERD_CERTFILE')); urllib.request.urlopen('%s://127.0.0.1:%s/healthz' % ('https' if tls else 'http', os.environ.get('PORT', '5000')), timeout=2, context=ssl._create_unverified_context() if tls else None)"]
# Exec form: trackerd is PID 1 and receives SIGTERM itself, so it closes clients with 1001.
# The source comes from TRACKERD_SOURCE (a --source flag here would win over it).
CMD ["trackerd"]
