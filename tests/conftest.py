from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from bot.store.sqlite import database as db
from bot.accounts.crypto import TokenCipher
from bot.store.sqlite.accounts import AccountRepository
from bot.accounts.service import AccountService
from bot.errors import ApiError
from bot.logs import install_redaction
from tests.engines import ENGINES

# Redaction on for the whole run: a failing test's captured log must not show a token either.
install_redaction()

GUILD = "111111111111111111"
OTHER_GUILD = "222222222222222222"
CHANNEL = "333333333333333333"
CHANNEL_2 = "444444444444444444"
CHANNEL_3 = "555555555555555555"
# Token-shaped, so the shape rule of the redactor is exercised as well as registration.
TOKEN = "MTExMTExMTExMTExMTExMTEx.GaBcDe.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1234"
TOKEN_2 = "second-account-token-zzzzzzzzzzzzzzzzzzzz5678"


class FakeChecker:
    """Stands in for Discord's /users/@me: known tokens map to user ids."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {TOKEN: "700000000000000001", TOKEN_2: "700000000000000002"}
        self.failure: ApiError | None = None
        self.calls = 0

    async def user_id(self, token: str) -> str:
        self.calls += 1
        if self.failure is not None:
            raise self.failure
        if token not in self.users:
            raise ApiError(400, "Required param discord is not a valid Discord token")
        return self.users[token]


@pytest.fixture
def key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def cipher(key: str) -> TokenCipher:
    return TokenCipher(key)


@pytest.fixture
async def database(tmp_path):
    opened = await db.Database.open(tmp_path / "test.db")
    yield opened
    await opened.close()


@pytest.fixture
def repository(database, cipher) -> AccountRepository:
    return database.stores(cipher).accounts


@pytest.fixture(params=sorted(ENGINES))
async def any_database(request, tmp_path):
    """A fresh database of each engine in turn (a module uses it as its ``database``)."""
    async with ENGINES[request.param](tmp_path) as open_database:
        opened = await open_database()
        yield opened
        await opened.close()


@pytest.fixture
def checker() -> FakeChecker:
    return FakeChecker()


@pytest.fixture
def service(repository, checker) -> AccountService:
    return AccountService(repository, checker, max_concurrent_jobs=10)


def pytest_terminal_summary(terminalreporter) -> None:
    """The hostile-input suite's figures (tests/hostile), whenever any of its attacks ran."""
    from tests.hostile.figures import table

    lines = table()
    if lines:
        terminalreporter.section("hostile input: figures")
        for line in lines:
            terminalreporter.write_line(line)
