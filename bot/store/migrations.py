"""Numbered SQL migrations, one folder per engine: ``migrations/<engine>/NNNN_name.sql``.

They ship in the package as ``bot.migrations``. Each adapter applies the ones its database has
not seen, each in one transaction with the row that records it, and keeps two processes
starting together from applying one twice (SQLite: its write lock; PostgreSQL: an advisory lock).
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.errors import StartupError

log = logging.getLogger(__name__)


def migrations_dir(engine: str = "sqlite") -> Path:
    """Where an engine's migrations are: in the installed package, or in a checkout on sys.path."""
    try:
        return Path(str(importlib.resources.files("bot.migrations") / engine))
    except ModuleNotFoundError:  # the checkout itself on sys.path, nothing installed
        return Path(__file__).resolve().parents[2] / "migrations" / engine


_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path) -> list[Migration]:
    if not directory.is_dir() or not any(directory.glob("*.sql")):
        # An installed copy without its migrations must fail here, not start on an empty database.
        raise StartupError(f"no migrations found in {directory}; the installation is incomplete: reinstall the bot")
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a version in {directory}")
    return migrations


def tell_newer(found: Iterable[int], migrations: list[Migration]) -> None:
    """Warns when the database holds migrations this version of the bot does not know: a newer bot
    migrated it (a process left on the old version during an upgrade, or an upgrade undone by
    reinstalling). The process goes on: during a rolling upgrade the version before works on the new
    schema, as each release keeps it so; an older one may not."""
    known = max((m.version for m in migrations), default=0)
    newer = max(found, default=0)
    if newer > known:
        log.warning("The database's schema is at version %d and this version of the bot knows up to %d: a newer"
                    " version of the bot migrated it. Upgrade this process; an older version may fail on a newer"
                    " schema (to go back, restore the backup made before upgrading)", newer, known)
