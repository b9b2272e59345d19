"""The store contract suite's fixture: one bundle of stores per adapter, the same tests for each.

An engine joins by adding an entry to ``tests/engines.py``'s ``ENGINES``: an opener of a fresh,
empty database (called again for a second connection to the same one, for races between
processes); each connection's stores are the adapter's own (``Database.stores``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from bot.store import Stores
from tests.engines import ENGINES


@pytest.fixture(params=sorted(ENGINES))
async def connect(request, tmp_path) -> AsyncIterator[Callable[[], contextlib.AbstractAsyncContextManager[Stores]]]:
    """Opens a connection (a process's view) to one fresh store of the engine under test."""
    cipher = TokenCipher(Fernet.generate_key())
    async with ENGINES[request.param](tmp_path) as open_database:

        @contextlib.asynccontextmanager
        async def connection() -> AsyncIterator[Stores]:
            db = await open_database()
            try:
                yield db.stores(cipher)
            finally:
                await db.close()

        yield connection


@pytest.fixture
async def stores(connect) -> AsyncIterator[Stores]:
    async with connect() as opened:
        # A job's owner is a process holding a lease (the port's rule): the tests' process has one.
        await opened.jobs.heartbeat("host:ns:1:aaaa", 1_800_000_000.0)
        yield opened
