"""The Compose files as Debian's docker-compose reads them (no Docker engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_config(tmp_path: Path, file: str, dotenv: str = "", **env: str) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing under CI (.ci/run installs it)")
        pytest.skip("docker-compose is not installed")
    # A project folder of its own: the file, and the example settings as .env (with ``dotenv``'s
    # lines after them: the last value of a variable wins).
    shutil.copy(ROOT / file, tmp_path / file)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text() + dotenv)
    # Nothing from the test's own environment may stand in for .env.
    base = {k: v for k, v in os.environ.items()
            if k not in ("POSTGRES_PASSWORD", "TOKEN_ENCRYPTION_KEY", "SHARD_1_HTTP_PORT")
            and not k.startswith(("HTTP_", "DATABASE_", "DISCORD_"))}
    return subprocess.run(["docker-compose", "-f", file, "config"], cwd=tmp_path, capture_output=True, text=True,
                          env={**base, **env}, timeout=60)


def test_the_postgresql_deployment_is_a_database_and_two_shards(tmp_path):
    result = compose_config(tmp_path, "docker-compose.postgres.yml", POSTGRES_PASSWORD="pw123", TOKEN_ENCRYPTION_KEY="k")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"postgres", "bot-shard-0", "bot-shard-1"}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["volumes"][0].startswith("pixverse-postgres:/var/lib/postgresql/data")
    ports = set()
    for shard in (0, 1):
        bot = services[f"bot-shard-{shard}"]
        environment = bot["environment"]
        assert environment["SHARD_COUNT"] == "2" and environment["SHARD_IDS"] == str(shard)
        assert environment["DATABASE_URL"] == "postgresql://pixverse:pw123@postgres:5432/pixverse"
        assert environment["TOKEN_ENCRYPTION_KEY"] == "k"
        assert environment["HTTP_HOST"] == "0.0.0.0" and environment["HTTP_CONTAINER_PORT"] == "8080"
        assert environment["HTTP_PORT"] == str(8080 + shard)  # each process's host port
        assert bot["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        ports.add(bot["ports"][0])
    assert ports == {"127.0.0.1:8080:8080/tcp", "127.0.0.1:8081:8080/tcp"}  # both serve the HTTP API


def test_the_postgresql_deployment_names_each_missing_secret(tmp_path):
    result = compose_config(tmp_path, "docker-compose.postgres.yml", TOKEN_ENCRYPTION_KEY="k")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr
    result = compose_config(tmp_path, "docker-compose.postgres.yml", POSTGRES_PASSWORD="pw123")
    assert result.returncode != 0
    assert "set TOKEN_ENCRYPTION_KEY in .env (the key every bot process shares)" in result.stderr


HEALTHCHECK = ["CMD", "python", "-m", "bot", "healthcheck"]


def bot_service(tmp_path: Path, dotenv: str) -> dict:
    result = compose_config(tmp_path, "docker-compose.yml", dotenv)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]["bot"]


def test_the_compose_file_has_no_version_key():
    for file in ("docker-compose.yml", "docker-compose.postgres.yml"):
        assert "version" not in yaml.safe_load((ROOT / file).read_text()), file


def test_settings_come_from_dotenv_and_the_container_keeps_its_own(tmp_path):
    bot = bot_service(tmp_path, "LOG_LEVEL=DEBUG\nPIXVERSE_QUEUE_SIZE=7\nDATABASE_PATH=elsewhere.db\nHTTP_HOST=127.0.0.1\n")
    environment = bot["environment"]
    assert environment["LOG_LEVEL"] == "DEBUG" and environment["PIXVERSE_QUEUE_SIZE"] == "7"  # from .env
    # What must differ inside the container: the volume, every interface, the container's port.
    assert environment["DATABASE_PATH"] == "/data/pixverse.db"
    assert environment["HTTP_HOST"] == "0.0.0.0" and environment["HTTP_CONTAINER_PORT"] == "8080"
    assert bot["volumes"][0].startswith("pixverse-data:/data")
    assert environment["HTTP_PORT"] == "8080" and bot["ports"] == ["127.0.0.1:8080:8080/tcp"]
    assert bot["healthcheck"]["test"] == HEALTHCHECK


def test_another_http_port_is_the_hosts_and_the_health_check_follows(tmp_path):
    bot = bot_service(tmp_path, "HTTP_PORT=9090\n")
    assert bot["environment"]["HTTP_PORT"] == "9090"
    assert bot["ports"] == ["127.0.0.1:9090:8080/tcp"]  # the host's loopback only
    # The health check reads the container's settings (HTTP_CONTAINER_PORT 8080): nothing hard-coded.
    assert bot["healthcheck"]["test"] == HEALTHCHECK


def test_http_port_0_turns_the_api_off_and_the_file_stays_valid(tmp_path):
    bot = bot_service(tmp_path, "HTTP_PORT=0\n")
    assert bot["environment"]["HTTP_PORT"] == "0"  # the bot: API off; its health check passes, saying so
    # Never container port 0 (Docker refuses it): the host side 0 is a free loopback port Docker
    # picks, where nothing answers.
    assert bot["ports"] == ["127.0.0.1:0:8080/tcp"]
    assert bot["healthcheck"]["test"] == HEALTHCHECK


def test_the_postgresql_deployment_follows_the_http_ports(tmp_path):
    result = compose_config(tmp_path, "docker-compose.postgres.yml", "HTTP_PORT=0\nSHARD_1_HTTP_PORT=9091\n",
                            POSTGRES_PASSWORD="pw123", TOKEN_ENCRYPTION_KEY="k")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["bot-shard-0"]["environment"]["HTTP_PORT"] == "0"
    assert services["bot-shard-0"]["ports"] == ["127.0.0.1:0:8080/tcp"]
    assert services["bot-shard-1"]["environment"]["HTTP_PORT"] == "9091"
    assert services["bot-shard-1"]["ports"] == ["127.0.0.1:9091:8080/tcp"]
    for name in ("bot-shard-0", "bot-shard-1"):
        assert services[name]["healthcheck"]["test"] == HEALTHCHECK
