"""Where a request of the HTTP API spends its time: each step of GET and POST /v1/pixverse/account alone.

    python bench/http_breakdown.py [--calls 2000]

A companion of ``bench/http_bench.py`` (same objects, same bench-only token checker): on one
CPU, with the event loop otherwise idle, it awaits each step the routes take, one call at a
time, and prints the mean cost per call. Beside them, for scale: a lookup on the loop's own
thread, one aiosqlite round trip to its worker thread, a batch of one through ``Database``,
and the token lookup in plain sqlite3 on the calling thread. Alone, a write is a batch of
one; under load (``bench/http_bench.py``) the writes in flight share a transaction.

Last, the floor of POST's account work with no Python around it: the encryption, the
keyed hash, and the repository's own upsert statement in plain sqlite3 on the calling
thread, in transactions of 32 with a savepoint each (as a batch under load runs them),
into a table that already holds 60,000 accounts (a full ``http_bench.py`` run leaves 66,000).
Measured in CPU time as well as wall time: under load the loop's thread runs while the
worker waits for the disk, so CPU time is what the requests share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.fernet import Fernet  # noqa: E402
from http_bench import BenchTokenChecker, account_body, account_token  # noqa: E402

from bot.accounts.crypto import TokenCipher  # noqa: E402
from bot.store.key_check import verify_cipher  # noqa: E402
from bot.store.sqlite.accounts import UPSERT_SQL, AccountRepository  # noqa: E402
from bot.accounts.service import AccountService  # noqa: E402
from bot.store.sqlite.database import Database  # noqa: E402
from bot.dispatch.backends.simulated import SimulatedBackend  # noqa: E402
from bot.dispatch.dispatcher import Dispatcher  # noqa: E402
from bot.store.sqlite.tokens import ApiTokenRepository, hash_token  # noqa: E402
from bot.store.sqlite.jobs import JobRepository

READ_GUILD = "910000000000000002"
WRITE_GUILD = "910000000000000001"


async def mean_us(label: str, step, calls: int) -> None:
    started = time.perf_counter()
    for i in range(calls):
        await step(i)
    print(f"  {label:<66} {(time.perf_counter() - started) / calls * 1e6:8.1f} µs")


async def main(calls: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="http-breakdown-"))
    key = Fernet.generate_key().decode()
    db = await Database.open(workdir / "breakdown.db")
    cipher = TokenCipher(key)
    assert await verify_cipher(db, cipher)
    repository = AccountRepository(db, cipher)
    accounts = AccountService(repository, BenchTokenChecker(), max_concurrent_jobs=10)
    accounts.listeners.append(Dispatcher(JobRepository(db), repository, SimulatedBackend(duration=1.0)))
    tokens = ApiTokenRepository(db)
    token = await tokens.create(READ_GUILD, "bench")
    for k in range(5):
        channel = str(930_000_000_000_000_000 + k)
        body = json.loads(account_body(READ_GUILD, channel, account_token("read", k)))
        await accounts.save(await accounts.prepare(body, path_channel=channel, guild_id=READ_GUILD))

    def new_request(i: int, offset: int):
        channel = str(940_000_000_000_000_000 + offset + i)
        body = json.loads(account_body(WRITE_GUILD, channel, account_token(f"w{offset}", i)))
        return accounts.prepare(body, path_channel=channel, guild_id=WRITE_GUILD)

    async def get_route(i: int) -> None:
        assert await tokens.guild_of(token) == READ_GUILD
        configs = await repository.list(READ_GUILD)
        json.dumps({config.channel_id: config.to_public() for config in configs})

    async def post_route(i: int) -> None:
        assert await tokens.guild_of(token) == READ_GUILD
        await accounts.save(await new_request(i, 3_000_000))

    async def upsert(i: int) -> None:
        await repository.upsert(guild_id=WRITE_GUILD, channel_id=str(950_000_000_000_000_000 + i),
                                token=account_token("u", i), discord_user_id=str(800_000_000_000_000_000 + i), max_jobs=3)

    async def cipher_work(i: int) -> None:
        cipher.encrypt(account_token("c", i))
        cipher.fingerprint(account_token("c", i))

    rng = random.Random(1)
    print(f"mean per call, {calls} calls one at a time, event loop otherwise idle, pid {os.getpid()}"
          f" on CPU {sorted(os.sched_getaffinity(0))}")
    print("scale:")
    await mean_us("Database.lookup_one('SELECT 1'): on the loop's own thread", lambda i: db.lookup_one("SELECT 1"), calls)
    await mean_us("aiosqlite: one round trip to its thread (conn.execute('SELECT 1'))", lambda i: db.conn.execute("SELECT 1"), calls)
    await mean_us("Database.fetchone('SELECT 1'): a batch of one, one trip", lambda i: db.fetchone("SELECT 1"), calls)
    raw = sqlite3.connect(workdir / "breakdown.db", isolation_level=None)
    sql = "SELECT guild_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL"
    started = time.perf_counter()
    for _ in range(calls):
        raw.execute(sql, (hash_token(token),)).fetchone()
    print(f"  {'the API-token lookup in plain sqlite3 on the calling thread':<66}"
          f" {(time.perf_counter() - started) / calls * 1e6:8.1f} µs")
    raw.close()
    print("every authenticated request:")
    await mean_us("ApiTokenRepository.guild_of (SHA-256 + 5 s cache)", lambda i: tokens.guild_of(token), calls)
    print("GET /v1/pixverse/account (5 accounts):")
    await mean_us("AccountRepository.list (kept while data_version is unchanged)", lambda i: repository.list(READ_GUILD), calls)
    await mean_us("the route's work: guild_of + list + to_public + JSON", get_route, calls)
    print("POST /v1/pixverse/account/<new channel>:")
    await mean_us("AccountService.prepare (rules 1-7 + find_by_token)", lambda i: new_request(i, 1_000_000), calls)
    await mean_us("AccountRepository.find_by_user (in save)", lambda i: repository.find_by_user(str(i)), calls)
    await mean_us("TokenCipher.encrypt + fingerprint (CPU, in upsert)", cipher_work, calls)
    await mean_us("AccountRepository.upsert (INSERT … RETURNING, a batch of one)", upsert, calls)
    await mean_us("Dispatcher.account_available (a lookup: nobody waiting)",
                  lambda i: JobRepository(db).promote_waiting(WRITE_GUILD, now=time.time(), owner="bench", rng=rng), calls)
    await mean_us("the route's work: guild_of + prepare + save", post_route, calls)
    await db.close()

    print("POST's account work with no Python around it (plain sqlite3 on this thread):")
    encrypt_us = cpu_us(lambda i: cipher.encrypt(account_token("f", i)), calls)
    fingerprint_us = cpu_us(lambda i: cipher.fingerprint(account_token("f", i)), calls)
    print(f"  {'Fernet encrypt of a token':<66} {encrypt_us:8.1f} µs")
    print(f"  {'HMAC-SHA256 fingerprint of a token':<66} {fingerprint_us:8.1f} µs")
    insert_cpu, insert_wall = upsert_floor(workdir / "breakdown.db", cipher, existing=60_000, measured=20_000)
    print(f"  {'the upsert statement, 32 a transaction, a savepoint each (CPU)':<66} {insert_cpu:8.1f} µs")
    print(f"  {'  the same, wall time (the worker also waits for the disk)':<66} {insert_wall:8.1f} µs")
    print(f"  {'sum: the least the account work costs before any glue':<66}"
          f" {encrypt_us + 2 * fingerprint_us + insert_cpu:8.1f} µs")


def cpu_us(step, calls: int) -> float:
    started = time.process_time()
    for i in range(calls):
        step(i)
    return (time.process_time() - started) / calls * 1e6


def upsert_floor(path: Path, cipher: TokenCipher, *, existing: int, measured: int, batch: int = 32) -> tuple[float, float]:
    """CPU and wall µs per upsert of a new account, after ``existing`` others were stored."""
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA synchronous=NORMAL")  # the floor without the fsync that the bot's FULL adds per batch
    ciphertext = cipher.encrypt(account_token("floor", 0))  # the same size as every token's

    def insert(first: int, count: int) -> None:
        for start in range(first, first + count, batch):
            raw.execute("BEGIN IMMEDIATE")
            for i in range(start, min(start + batch, first + count)):
                raw.execute("SAVEPOINT work")
                raw.execute(UPSERT_SQL, (
                    str(960_000_000_000_000_000 + i), WRITE_GUILD, ciphertext,
                    cipher.fingerprint(account_token("floor", i)), "xxxx", str(810_000_000_000_000_000 + i * 7919),
                    3, "2026-11-21T00:00:00.000000Z", "2026-11-21T00:00:00.000000Z",
                )).fetchall()
                raw.execute("RELEASE work")
            raw.execute("COMMIT")

    insert(0, existing)
    cpu, wall = time.process_time(), time.perf_counter()
    insert(existing, measured)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    raw.close()
    # The fingerprints inside the loop are counted in the crypto lines above: take them out here.
    fingerprint = cpu_us(lambda i: cipher.fingerprint(account_token("floor", i)), measured)
    return cpu / measured * 1e6 - fingerprint, wall / measured * 1e6 - fingerprint


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: do not pin)")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(main(args.calls))
