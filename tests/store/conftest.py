"""The store contract suite's fixture: one bundle of stores per adapter, the same tests for each.

An adapter joins by adding an entry to ``ADAPTERS``: a factory that opens a fresh, empty store
(and a second connection to the same one, for races between processes) and closes it after.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet

from bot.accounts.crypto import TokenCipher
from bot.store import AccountStore, JobStore, TokenStore


@dataclass
class Stores:
    accounts: AccountStore
    jobs: JobStore
    tokens: TokenStore


@contextlib.asynccontextmanager
async def sqlite_stores(tmp_path) -> AsyncIterator[Callable[[], contextlib.AbstractAsyncContextManager[Stores]]]:
    from bot.store.sqlite.accounts import AccountRepository
    from bot.store.sqlite.database import Database
    from bot.store.sqlite.jobs import JobRepository
    from bot.store.sqlite.tokens import ApiTokenRepository

    cipher = TokenCipher(Fernet.generate_key())
    path = tmp_path / "contract.db"

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Stores]:
        db = await Database.open(path)
        try:
            yield Stores(AccountRepository(db, cipher), JobRepository(db), ApiTokenRepository(db))
        finally:
            await db.close()

    yield connect


@contextlib.asynccontextmanager
async def postgres_stores(tmp_path) -> AsyncIterator[Callable[[], contextlib.AbstractAsyncContextManager[Stores]]]:
    from bot.store.postgres.accounts import AccountRepository
    from bot.store.postgres.database import Database
    from bot.store.postgres.jobs import JobRepository
    from bot.store.postgres.tokens import ApiTokenRepository
    from tests.postgres_support import fresh_schema

    cipher = TokenCipher(Fernet.generate_key())
    async with fresh_schema() as (url, schema):

        @contextlib.asynccontextmanager
        async def connect() -> AsyncIterator[Stores]:
            db = await Database.open(url, pool_size=4, server_settings={"search_path": schema})
            try:
                yield Stores(AccountRepository(db, cipher), JobRepository(db), ApiTokenRepository(db))
            finally:
                await db.close()

        yield connect


ADAPTERS = {"sqlite": sqlite_stores, "postgres": postgres_stores}


@pytest.fixture(params=sorted(ADAPTERS))
async def connect(request, tmp_path):
    """Opens a connection (a process's view) to one fresh store of the adapter under test."""
    async with ADAPTERS[request.param](tmp_path) as factory:
        yield factory


@pytest.fixture
async def stores(connect) -> AsyncIterator[Stores]:
    async with connect() as opened:
        # A job's owner is a process holding a lease (the port's rule): the tests' process has one.
        await opened.jobs.heartbeat("host:ns:1:aaaa", 1_800_000_000.0)
        yield opened
