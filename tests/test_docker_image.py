"""The image as the Dockerfile declares it, and what .dockerignore keeps out of the build context
(Docker's own matching rules: a pattern matches a path or one of its parent folders, ``**`` any folders)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_listens_everywhere_runs_unprivileged_and_checks_its_health():
    steps = instructions()
    env = " ".join(value for name, value in steps if name == "ENV").split()
    assert {"HTTP_HOST=0.0.0.0", "HTTP_CONTAINER_PORT=8080", "DATABASE_PATH=/data/pixverse.db"} <= set(env)
    users = [value for name, value in steps if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    (healthcheck,) = [value for name, value in steps if name == "HEALTHCHECK"]
    options, _, command = healthcheck.partition("CMD")
    assert json.loads(command) == ["python", "-m", "bot", "healthcheck"]
    assert "--timeout=" in options and "--start-period=" in options
    assert ("EXPOSE", "8080") in steps
    assert json.loads(dict(steps)["CMD"]) == ["python", "-m", "bot"]


def test_the_image_runs_the_installed_compiled_package_not_the_copied_sources():
    # With PYTHONDONTWRITEBYTECODE and /app not writable by the bot's user, sources left in the
    # working folder would shadow the installed package and be compiled again at every start.
    steps = instructions()
    copied = {value.split()[0] for name, value in steps if name == "COPY"}
    (install,) = [value for name, value in steps if name == "RUN" and "pip install ." in value]
    commands = [part.strip() for part in install.split("&&")]
    after_install = commands[commands.index("pip install .") + 1:]
    removed = {word for command in after_install if command.startswith("rm ") for word in command.split()[1:]}
    assert {"bot", "cogs", "migrations"} <= copied
    assert {"bot", "cogs", "migrations", "build", "pixverse_discord_bot.egg-info"} <= removed
    assert "--no-compile" not in install


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exception = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.compile("".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else
            part if part.startswith("[") else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?|\[[^]]*\])", pattern) if part
        ).replace(".*/", "(.*/)?"))
        parts = path.split("/")
        if any(regex.fullmatch("/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            verdict = not exception
    return verdict


def test_secrets_data_and_caches_stay_out_of_the_build_context():
    for path in (".env", ".env.local", "data/pixverse.db", "data/pixverse.db.key", "pixverse.db", "pixverse.db-wal",
                 "backups/pixverse.db.key", "old/data/x", ".git/HEAD", "bot/__pycache__/core.cpython-311.pyc",
                 "bot/core.pyc", ".pytest_cache/v", ".hypothesis/examples/x", ".venv/bin/python", "venv/bin/python",
                 "tests/test_compose.py", "bench/http_bench.py", "pixverse_discord_bot.egg-info/PKG-INFO",
                 "build/lib/bot/core.py"):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "bot/__main__.py", "bot/web/routes.py", "cogs/jobs/__init__.py",
                 "migrations/sqlite/0001_accounts.sql", "migrations/postgres/0001_schema.sql"):
        assert not ignored(path), path
