"""The Compose files as Debian's docker-compose reads them (no Docker engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose_config(tmp_path: Path, file: str, **env: str) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing under CI (.ci/run installs it)")
        pytest.skip("docker-compose is not installed")
    # A project folder of its own: the file, and the example settings as .env.
    shutil.copy(ROOT / file, tmp_path / file)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    base = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "TOKEN_ENCRYPTION_KEY")}
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
        assert environment["HTTP_HOST"] == "0.0.0.0" and environment["HTTP_PORT"] == "8080"
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
