FROM python:3.11-slim

# DATABASE_PATH: the database and its generated key file live on the volume /data.
# HTTP_HOST=0.0.0.0: the HTTP API must listen on every interface of the container to be published.
# HTTP_CONTAINER_PORT=8080: inside the container the API listens on 8080 whenever HTTP_PORT is not
# 0; HTTP_PORT=0 turns it off, any other HTTP_PORT is the host's port (docker-compose.yml publishes
# 127.0.0.1:${HTTP_PORT}:8080).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_PATH=/data/pixverse.db \
    HTTP_HOST=0.0.0.0 \
    HTTP_CONTAINER_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
# The image runs the installed package, whose bytecode pip compiled: the copied sources (and the
# build/ and egg-info setuptools leaves beside them) are removed, or `python -m bot` in /app would
# import them instead and compile every module at each start (PYTHONDONTWRITEBYTECODE, and a user
# who cannot write /app, keep that from being cached).
RUN pip install . \
    && rm -rf bot cogs migrations build pixverse_discord_bot.egg-info \
    && useradd --system --uid 10001 --home /app pixverse \
    && mkdir -p /data && chown pixverse /data

# Not root: the bot needs to write only /data.
USER pixverse
VOLUME ["/data"]
EXPOSE 8080
# GET /healthz on the container's port: 0 when the database and the gateway are fine, else 1
# with the reason (docker inspect shows it). With HTTP_PORT=0 there is no API to ask: it passes.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot", "healthcheck"]
# SIGTERM from `docker stop` closes the database cleanly; exit code 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
