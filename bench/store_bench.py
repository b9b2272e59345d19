"""The store's periodic queries at 10,000 and 1,000,000 job rows: they must cost O(work due), not O(table).

    python bench/store_bench.py [--sizes 10000,1000000] [--rounds 15]

For each size a database is built with the bot's own ``Database.open`` (its PRAGMAs and
migrations), filled with bulk inserts (finished jobs spread over 31 days, as the retention
keeps them, plus a handful of live ones: 20 holding a slot, 10 waiting, 5 still open at
PixVerse), and cached under /tmp (rebuilt when the schema version changes). Then, in
interleaved rounds, each query the sweep, orphan recovery, queue promotion, queue positions
and purge run is timed through the real ``JobRepository`` / placement code, and beside them,
in the same run, the sweep's former single-OR query (what the table scan cost). Reported: the
median of the rounds per query and size, the growth from the small to the big table, and the
verdicts (each ≤ 1 ms at a million rows, growth ≤ 2×). Purging a day's backlog is timed per
batch transaction (at most ``PURGE_BATCH`` rows), the longest the write lock is held.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.store.sqlite.database import Database, load_migrations  # noqa: E402
from bot.store.sqlite import bulk  # noqa: E402
from bot.store.sqlite.jobs import PURGE_BATCH, JobRepository  # noqa: E402
from bot.dispatch.models import job_from_row  # noqa: E402

NOW = 1_800_000_000.0
DAY = 86_400.0
GUILDS = 2_000
OWNER = "bench:0:store"
OLD_TIMED_OUT = (
    "SELECT * FROM jobs WHERE (slot_held = 1 AND COALESCE(submitted_at, updated_at) < ?)"
    " OR (queued = 1 AND created_at < ?) ORDER BY seq"
)
def rows(size: int):
    """BENCH ONLY: a month of finished jobs, then 35 live ones (holding a slot, waiting, open at PixVerse)."""
    for n in range(size):
        created = NOW - 31 * DAY + n * (31 * DAY / size)
        guild = str(200_000_000_000_000_000 + n % GUILDS)
        yield dict(job_id=f"job:bench-{n}", guild_id=guild, account_channel_id=str(100_000_000_000_000_000 + n % 5000),
                   account_user_id="700000000000000001", max_jobs=3, params='{"prompt": "p"}', created_at=created,
                   submitted_at=created)
    for n in range(35):
        guild = str(200_000_000_000_000_000 + n % GUILDS)
        live = dict(job_id=f"job:live-{n}", guild_id=guild, params='{"prompt": "p"}', created_at=NOW - 60)
        on_account = dict(account_channel_id=str(100_000_000_000_000_000 + n), account_user_id="700000000000000001",
                          max_jobs=3, submitted_at=NOW - 60, pixverse_open=1)
        if n < 20:
            yield dict(live, state="submitted", status="progress", owner=OWNER, **on_account)
        elif n < 30:
            yield dict(live, state="waiting", status="created")
        else:
            yield dict(live, **on_account)


async def _load(tx, size: int) -> None:
    await bulk.lease(tx, OWNER, NOW)
    await bulk.insert_jobs(tx, rows(size))


async def build(size: int, cache: Path) -> Path:
    version = max(m.version for m in load_migrations())
    path = cache / f"store-bench-{size}-v{version}.db"
    if path.exists():
        return path
    tmp = path.with_suffix(".building")
    for leftover in cache.glob(tmp.name + "*"):
        leftover.unlink()
    started = time.perf_counter()
    db = await Database.open(tmp)
    await db.run(lambda tx: _load(tx, size))
    await db.close()
    tmp.rename(path)
    print(f"  built {path} ({size:,} finished jobs) in {time.perf_counter() - started:.1f} s", flush=True)
    return path


async def timed(work, n: int = 1) -> float:
    started = time.perf_counter_ns()
    for _ in range(n):
        await work()
    return (time.perf_counter_ns() - started) / n / 1e6


async def measure(path: Path, rounds: int, results: dict[str, list[float]]) -> None:
    db = await Database.open(path)
    jobs = JobRepository(db)
    waiting = job_from_row(await db.fetchone("SELECT * FROM jobs WHERE queued = 1 ORDER BY seq DESC LIMIT 1"))
    try:
        queries = {
            "sweep: timed out": lambda: jobs.timed_out(now=NOW, timeout=900),
            "sweep: timed out, the former OR query": lambda: db.fetchall(OLD_TIMED_OUT, (NOW - 900, NOW - 900)),
            "recovery: orphaned": lambda: jobs.orphaned([OWNER]),
            "promotion: servers with waiting jobs": jobs.guilds_with_waiting_jobs,
            "queue position": lambda: jobs.queue_position(waiting),
            "sweep: stale at PixVerse (nothing due)": lambda: jobs.close_stale_at_pixverse(before=NOW - 31 * DAY),
            "purge (nothing due)": lambda: jobs.purge(before=NOW - 32 * DAY),
        }
        for _ in range(rounds):
            for name, query in queries.items():
                results.setdefault(name, []).append(await timed(query, 5))
    finally:
        await db.close()


async def purge_backlog(path: Path, size: int) -> tuple[int, list[float]]:
    """A day's backlog purged on a copy: rows deleted, and each batch's time (ms)."""
    copy = path.with_name(path.name + ".purge")
    shutil.copyfile(path, copy)
    db = await Database.open(copy)
    batches: list[float] = []
    execute = db.execute

    async def timed_execute(sql, params=()):
        started = time.perf_counter()
        changed = await execute(sql, params)
        batches.append((time.perf_counter() - started) * 1000)
        return changed

    db.execute = timed_execute  # type: ignore[method-assign]
    try:
        deleted = await JobRepository(db).purge(before=NOW - 30 * DAY)  # the oldest day
    finally:
        await db.close()
        for leftover in copy.parent.glob(copy.name + "*"):
            leftover.unlink()
    return deleted, batches


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cache", default="/tmp", help="where the built databases are kept between runs")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cache = Path(args.cache)
    print(f"Store bench: periodic queries at {', '.join(f'{s:,}' for s in sizes)} job rows, {args.rounds} rounds"
          f" of 5 calls each (median of rounds), SQLite {__import__('sqlite3').sqlite_version}")
    paths = {size: await build(size, cache) for size in sizes}
    results: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
    for _ in range(2):  # interleaved halves: the machine's noise falls on every size alike
        for size in sizes:
            await measure(paths[size], args.rounds // 2 or 1, results[size])
    small, big = sizes[0], sizes[-1]
    print()
    print(f"{'query':<42} {small:>10,} ms {big:>12,} ms {'growth':>8}  ≤1 ms  growth≤2×")
    ok = True
    for name in results[small]:
        a, b = statistics.median(results[small][name]), statistics.median(results[big][name])
        baseline = "former" in name
        fast, flat = b <= 1.0, b / a <= 2.0
        ok &= baseline or (fast and flat)
        verdicts = "(baseline, not a target)" if baseline else f"{'PASS' if fast else 'FAIL':>5}  {'PASS' if flat else 'FAIL':>9}"
        print(f"{name:<42} {a:>13.3f} {b:>15.3f} {b / a:>7.2f}×  {verdicts}")
    deleted, batches = await purge_backlog(paths[big], big)
    print()
    print(f"Purging the oldest day at {big:,} rows: {deleted:,} rows in {len(batches)} batches of at most {PURGE_BATCH};"
          f" the write lock is held {statistics.median(batches):.1f} ms per batch (median), {max(batches):.1f} ms at"
          f" most (a WAL checkpoint falls in one), {sum(batches):.0f} ms in all, with other work free to run between")
    print()
    print("Overall:", "all targets met" if ok else "some targets missed (see FAIL above)")
    print(f"Rerun: cd {ROOT} && python bench/store_bench.py --sizes {args.sizes} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
