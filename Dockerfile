# syntax=docker/dockerfile:1
#
# gts-bot container image.
#
#   docker build -t gts-bot .
#   docker run -d --name gts-bot \
#     -v gts-bot-data:/data \
#     -v "$PWD/config.yaml:/etc/gts-bot/config.yaml:ro" \
#     gts-bot
#
# The /healthz + /metrics listener binds 0.0.0.0 *inside the container's own network namespace* so the
# HEALTHCHECK and a scraper on the same container network can reach it. It has no authentication:
# do not publish port 9464 on a public interface (if you must publish it, use -p 127.0.0.1:9464:9464).

# --- build: install the project and its dependencies into a venv ------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY migrations ./migrations
# No [test] extra: the image carries only what `gts-bot run` needs.
RUN /opt/venv/bin/pip install .

# --- runtime ----------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GTS_BOT_CONFIG=/etc/gts-bot/config.yaml \
    GTS_BOT_DATA_DIR=/data \
    GTS_BOT_OBSERVABILITY__ENABLED=true \
    GTS_BOT_OBSERVABILITY__HOST=0.0.0.0 \
    GTS_BOT_OBSERVABILITY__PORT=9464

RUN groupadd --system --gid 10001 gtsbot \
 && useradd --system --uid 10001 --gid gtsbot --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin gtsbot \
 && mkdir -p /data /etc/gts-bot \
 && chown gtsbot:gtsbot /data \
 && chmod 0700 /data

COPY --from=build /opt/venv /opt/venv

# The database, the key ring and the Matrix store live here; the directory must outlive the container.
VOLUME ["/data"]

USER 10001:10001

EXPOSE 9464

# slim has no curl; urllib raises (exit 1) on 503 or no answer. Proxies from the environment are ignored.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('GTS_BOT_OBSERVABILITY__PORT', '9464'), timeout=4)"]

ENTRYPOINT ["gts-bot"]
CMD ["run"]
