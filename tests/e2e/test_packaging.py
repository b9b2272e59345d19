"""The bot as a wheel installs it: ``pip install .`` and ``python -m bot`` from any folder, migrations included."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.e2e.conftest import CHANNEL_ID, GUILD_ID
from tests.e2e.test_process_e2e import bot_env, finish, start_process

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_on_disk_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("bot", "cogs") for path in (ROOT / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == on_disk | {"bot.migrations"}
    assert config["package-dir"] == {"bot.migrations": "migrations"}
    assert sorted(p.name for p in (ROOT / "migrations" / "sqlite").glob("*.sql"))  # one folder per engine


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed alone into a folder of its own (the test
    environment supplies the dependencies)."""
    wheels = tmp_path_factory.mktemp("wheel")
    target = tmp_path_factory.mktemp("site")
    # Built from a copy: setuptools leaves build/ in the tree it builds, and a stale build/lib
    # would both litter the checkout and slip removed modules into later wheels.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("bot", "cogs", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in (target / "bot" / "migrations" / "sqlite").glob("*.sql")) == sorted(
        p.name for p in (ROOT / "migrations" / "sqlite").glob("*.sql"))
    return target


async def test_the_installed_wheel_runs_from_any_folder(installed_wheel, fake, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = elsewhere / "data" / "pixverse.db"
    env = bot_env(fake, database)
    env["PYTHONPATH"] = str(installed_wheel)  # the wheel's copy, not the checkout's
    process = await start_process(env, elsewhere)
    try:
        await fake.wait_for_identify(timeout=30)
        result = await fake.invoke("pixverse-accounts", None, guild_id=GUILD_ID, channel_id=CHANNEL_ID)
        assert result.content == "404 · Configuration not found"
    finally:
        process.send_signal(signal.SIGTERM)
    code, stderr = await finish(process)
    assert code == 0, stderr
    latest = max(int(path.name[:4]) for path in (ROOT / "migrations" / "sqlite").glob("*.sql"))
    assert f"Database {database} at schema version {latest}" in stderr  # every migration was applied
    # It ran the wheel's code: the log names the module files it loaded from there.
    probe = subprocess.run([sys.executable, "-c", "import bot, bot.migrations; print(bot.__file__, bot.migrations.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert all(path.startswith(str(installed_wheel)) for path in probe.stdout.split()), probe.stdout
