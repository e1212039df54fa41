# The control plane image: web (gunicorn), the RQ workers and the RQ cron scheduler all run this
# one image with different commands (compose/docker-compose.prod.yml; docs/production.md).
#
#   docker build --build-arg VERSION=1.4.0 --build-arg GIT_SHA=$(git rev-parse HEAD) -t platform:1.4.0 .
#
# BASE_IMAGE is any Debian bookworm image with Python 3.11 and its venv module; the public default
# is python:3.11-slim-bookworm. Builder and runtime use the same base, so the virtualenv copied
# from one runs in the other. pip reads PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX build args
# (a mirror, or a local wheelhouse in CI and the tests).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_FIND_LINKS=
ARG PIP_NO_INDEX=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.txt .
# Wheels first (anything without a binary wheel is built here, never in the runtime), then the
# virtualenv from those wheels alone.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --wheel-dir /wheels -r requirements.txt \
    && /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt \
    && /opt/venv/bin/pip uninstall -q -y pip setuptools
COPY . /app
WORKDIR /app
# Static files with the production storage (hashed names, gzip/brotli copies) for whitenoise.
RUN DEBUG=0 SECRET_KEY=collectstatic-only /opt/venv/bin/python manage.py collectstatic --noinput -v0 \
    && find /app -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.0.0-dev
ARG GIT_SHA=unknown
ARG SOURCE_URL=https://github.com/example/platform
# pg_dump/pg_restore for backups (must match PostgreSQL 15); installed only when the base lacks them.
ARG RUNTIME_PACKAGES="postgresql-client-15 ca-certificates"
LABEL org.opencontainers.image.title="platform-control-plane" \
      org.opencontainers.image.description="Multi-tenant SaaS control plane: web, RQ workers, RQ cron scheduler" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
RUN set -eu; missing=""; \
    for p in $RUNTIME_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done; \
    if [ -n "$missing" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $missing && rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin app; \
    install -d -o app -g app /var/lib/platform/backups
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=root:root /app /app
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=platform_site.settings \
    PORT=8000 \
    RELEASE_VERSION=${VERSION} \
    GIT_SHA=${GIT_SHA}
WORKDIR /app
# The code is root's and read-only to the app; it writes only to /tmp (and mounted volumes).
USER app
EXPOSE 8000
# Per role: web answers /healthz, a worker is registered in Redis, the scheduler heartbeats
# (CONTAINER_ROLE; the compose file sets it for workers and the scheduler).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "monitoring.container_health"]
# gunicorn binds 0.0.0.0:$PORT and runs $WEB_CONCURRENCY workers (its own defaults read both).
CMD ["gunicorn", "-c", "python:monitoring.gunicorn_config", "platform_site.wsgi"]
