"""A full disk, for real: a 4 MB tmpfs filled to the last byte under the running bot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.processes.common import ROOT

UNWRITABLE = {"error": "The database cannot be written; nothing was saved", "code": 503}


def _namespace_command() -> list[str]:
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare to mount a small private tmpfs (CI runs as root)")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this sandbox refuses a private mount namespace: {probe.stderr.decode().strip()}")
    return [unshare, "-m"]


def test_a_full_disk_is_a_503_that_saves_nothing_and_healthz_recovers(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [*_namespace_command(), sys.executable, "-m", "tests.processes.full_disk_worker", "--mount", str(mount)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["healthz_before"] == [200, {"status": "ok", "code": 200}]
    # HTTP and slash command alike: the honest answer, and nothing half-written.
    assert seen["post_when_full"] == [503, UNWRITABLE]
    assert seen["slash_when_full"] == ["503 · The database cannot be written; nothing was saved", True]
    assert seen["list_when_full"][0] == 404
    assert seen["healthz_when_full"] == [503, {"status": "unavailable", "code": 503,
                                               "error": "the database cannot be written (read-only, disk full or I/O error)"}]
    # Space again: healthy once a write commits, and the same request now saves.
    assert seen["healthz_after"] == [200, {"status": "ok", "code": 200}]
    assert seen["post_after"] == [204, None]
    assert list(seen["list_after"][1]) == ["810000000000000002"]
    assert "Traceback" not in result.stderr
