"""One of the two processes of tests/test_overcommit.py.

Opens the bot's own Core on the shared database, starts its :class:`Dispatcher`, prints ``ready`` and waits
for the barrier file; then runs ``--jobs`` concurrent submissions through
``Dispatcher.submit``. A 429 is retried after a short random sleep until the job is
placed. The backend holds each job a short random time and reports completion through
``job_update``, so the slot is freed by the product's own completion path. At the end it
prints one JSON line: placed, 429s retried, statuses, the most jobs it held at once.

    python -m tests.processes.overcommit_worker --db FILE --guild ID --barrier FILE [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

from bot.core import Core
from bot.dispatch.backends.base import JobUpdate, PixverseBackend
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import FINAL, Job, JobStatus, Verb
from bot.errors import ApiError
from bot.settings import Settings
from tests.processes.common import ASKED_IN, BODY, KEY_ENV, MEMBER, NoDiscord, worker_logging


class HoldBackend(PixverseBackend):
    """Holds each job ``hold`` seconds (random in a range), then says PixVerse completed it.

    ``active`` counts jobs between their hand-over and the moment their completion is
    reported. That interval lies inside the time the job holds its slot (placement commit
    … release commit), so ``max_active`` can never exceed the slots this process held.
    """

    def __init__(self, hold: tuple[float, float], rng: random.Random) -> None:
        self.hold = hold
        self.rng = rng
        self.active = 0
        self.max_active = 0
        self.submitted = 0
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, job: Job, token: str) -> None:
        self.submitted += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        task = asyncio.create_task(self._hold(job), name=f"hold {job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hold(self, job: Job) -> None:
        await asyncio.sleep(self.rng.uniform(*self.hold))
        self.active -= 1
        await self.events.job_update(
            job.job_id, JobUpdate(JobStatus.COMPLETED, message_id=f"held-{job.job_id}", content="held")
        )

    async def press(self, job: Job, parent: Job, token: str) -> None:
        raise NotImplementedError

    async def resume(self, jobs: list[Job], token: str) -> None:
        raise AssertionError(f"jobs {[j.job_id for j in jobs]} were taken over from a live process")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class FinalStates:
    """The dispatcher's listener: resolves one future per job when it reaches a final state."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future] = {}
        self.notified: Counter[str] = Counter()

    def future(self, job_id: str) -> asyncio.Future:
        if job_id not in self._futures:
            self._futures[job_id] = asyncio.get_running_loop().create_future()
        return self._futures[job_id]

    async def job_changed(self, job: Job) -> None:
        if job.status in FINAL:
            self.notified[job.job_id] += 1
            future = self.future(job.job_id)
            if not future.done():
                future.set_result(job.status)


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    settings = Settings(
        _env_file=None, discord_token="worker-bot-token", database_path=args.db,
        token_encryption_key=os.environ[KEY_ENV], pixverse_queue_size=0, pixverse_job_timeout_seconds=600.0,
        http_port=0,
    )
    backend = HoldBackend((args.hold_min, args.hold_max), random.Random(args.seed + 1))
    # The bot's own Core, with a backend that holds each job a moment instead of PixVerse.
    core = await Core.open(settings, NoDiscord(), backend=backend)
    finals = FinalStates()
    dispatcher = core.dispatcher
    dispatcher.rng = random.Random(args.seed + 2)
    dispatcher.listeners.append(finals)
    try:
        return await _work(args, rng, dispatcher, backend, finals)
    finally:
        # Also on a failure or the deadline: aiosqlite's thread would keep the process alive.
        await core.close()


async def _work(args: argparse.Namespace, rng: random.Random, dispatcher: Dispatcher, backend: HoldBackend,
                finals: FinalStates) -> dict:
    await dispatcher.start()
    print("ready", flush=True)
    barrier = Path(args.barrier)
    while not barrier.exists():
        await asyncio.sleep(0.001)

    retries = 0
    placed_ids: list[str] = []

    async def one(i: int) -> JobStatus:
        nonlocal retries
        while True:
            try:
                placed = await dispatcher.submit(
                    guild_id=args.guild, requester_id=MEMBER, request_channel_id=ASKED_IN, verb=Verb.CREATE,
                    body={**BODY, "prompt": f"{BODY['prompt']} #{args.seed}-{i}"},
                )
                break
            except ApiError as exc:
                if exc.code != 429:
                    raise
                retries += 1
                await asyncio.sleep(rng.uniform(args.retry_min, args.retry_max))
        if placed.queue_position is not None:
            raise AssertionError(f"queue_size is 0 but job {placed.job.job_id} was queued")
        placed_ids.append(placed.job.job_id)
        return await finals.future(placed.job.job_id)

    started = time.time()
    statuses = await asyncio.gather(*(one(i) for i in range(args.jobs)))
    ended = time.time()
    await dispatcher.wait_idle()
    summary = {
        "pid": os.getpid(),
        "owner": dispatcher.owner,
        "placed": len(placed_ids),
        "unique_jobs": len(set(placed_ids)),
        "job_ids": placed_ids,
        "retried_429": retries,
        "statuses": dict(Counter(s.value for s in statuses)),
        "max_concurrent": backend.max_active,
        "submitted_to_backend": backend.submitted,
        "notified_more_than_once": sorted(j for j, n in finals.notified.items() if n != 1),
        "started_at": started,
        "ended_at": ended,
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--guild", required=True)
    parser.add_argument("--barrier", required=True)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hold-min", type=float, default=0.010)
    parser.add_argument("--hold-max", type=float, default=0.060)
    parser.add_argument("--retry-min", type=float, default=0.100)
    parser.add_argument("--retry-max", type=float, default=0.500)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    worker_logging()
    summary = asyncio.run(asyncio.wait_for(run(args), args.deadline))
    print(json.dumps(summary), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
