FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_PATH=/data/pixverse.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
RUN pip install . \
    && useradd --system --uid 10001 --home /app pixverse \
    && mkdir -p /data && chown pixverse /data

USER pixverse
VOLUME ["/data"]
# The HTTP API (HTTP_PORT); docker-compose.yml publishes it on the host's loopback.
EXPOSE 8080
# SIGTERM from `docker stop` closes the database cleanly; exit code 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
