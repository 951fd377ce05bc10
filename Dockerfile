# trackerd: the eye-tracking WebSocket server, for push sessions only by default (--source none):
# each client sends its own frames. A container has no camera, and the demo clip as a default
# would answer a client that forgot "source": "client" with a stranger's realistic eye_data.
# Build: docker build -t trackerd .
# Run:   docker run -p 5000:5000 -v trackerd-data:/data trackerd

# The build stage compiles the kernels ahead of time (kernels/build.py: numba's pycc, which
# needs a C and C++ compiler) into a wheel; the image itself has no compiler and no numba cache.
FROM python:3.11.11-slim-bookworm AS build
# The kernels are compiled for this CPU (an LLVM name): x86-64-v3 (AVX2, any x86 server since
# ~2015) runs wherever the image is pulled; "host" is the build machine's own, ~25 % faster on
# the eye centre; "generic" for other architectures.
ARG TRACKERD_KERNELS_CPU=x86-64-v3
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRACKERD_KERNELS_CPU=${TRACKERD_KERNELS_CPU}
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.2.* g++=4:12.2.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY trackerd ./trackerd
COPY kernels ./kernels
# trackerd's wheel and every dependency's, so the image installs without a compiler or an index.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
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
    && mkdir -p /app /data \
    && chown trackerd /data
WORKDIR /app

COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels /wheels/trackerd-*.whl && rm -rf /wheels

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
