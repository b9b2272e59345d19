"""PostgreSQL for the tests: the server .ci/run starts (``PIXVERSE_TEST_DATABASE_URL``), and a
fresh schema per test on it, dropped afterwards.

Without that variable the tests that need PostgreSQL skip on a developer machine
(``.ci/postgres start /tmp/pg`` prints a URL to set), and fail under CI (``CI`` set): there a
missing server must never pass as skipped tests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import pytest

URL_VARIABLE = "PIXVERSE_TEST_DATABASE_URL"


def postgres_url() -> str:
    url = os.environ.get(URL_VARIABLE, "").strip()
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(f"{URL_VARIABLE} is not set: under CI the PostgreSQL tests must run (.ci/run starts a server)")
    pytest.skip(f"PostgreSQL tests need {URL_VARIABLE} (for example: export {URL_VARIABLE}=$(.ci/postgres start /tmp/pg))")


def url_with_schema(url: str, schema: str) -> str:
    """The URL whose connections use ``schema`` (asyncpg passes unknown query parameters on as
    server settings): what a bot process in a test is given as DATABASE_URL."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}search_path={schema}"


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[tuple[str, str]]:
    """(server URL, schema name): an empty schema of its own for one test, dropped after it."""
    import asyncpg

    url = postgres_url()
    schema = "test_" + secrets.token_hex(6)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    try:
        yield url, schema
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()
