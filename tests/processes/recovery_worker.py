"""The process tests/test_recovery_process.py kills with SIGKILL in the middle of its jobs.

Opens the shared database, starts a real :class:`Dispatcher` with the
:class:`SimulatedBackend`, submits ``--jobs`` jobs, waits until every placed one has been
handed to the backend (``wait_idle`` and ``submitted_at`` set in the database), prints
one JSON line (``ready``, its owner id, the placed and queued job ids) and then sleeps
until it is killed. It never ends a job itself: ``--timeout`` is long enough that its own
sweep cannot fire first.

    python -m tests.processes.recovery_worker --db FILE --guild ID --jobs N --duration S
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random

from bot.accounts.crypto import TokenCipher
from bot.store.sqlite.accounts import AccountRepository
from bot.store.sqlite.database import Database
from bot.dispatch.backends.simulated import SimulatedBackend
from bot.dispatch.dispatcher import Dispatcher
from bot.dispatch.models import Verb
from bot.store.sqlite.jobs import JobRepository
from tests.processes.common import ASKED_IN, BODY, KEY_ENV, MEMBER, worker_logging


async def run(args: argparse.Namespace) -> None:
    db = await Database.open(args.db)
    accounts = AccountRepository(db, TokenCipher(os.environ[KEY_ENV]))
    dispatcher = Dispatcher(
        JobRepository(db), accounts, SimulatedBackend(duration=args.duration), queue_size=args.queue_size,
        job_timeout=args.timeout, rng=random.Random(5),
    )
    await dispatcher.start()
    placed, queued = [], []
    for i in range(args.jobs):
        result = await dispatcher.submit(
            guild_id=args.guild, requester_id=MEMBER, request_channel_id=ASKED_IN, verb=Verb.CREATE,
            body={**BODY, "prompt": f"{BODY['prompt']} #{i}"},
        )
        (placed if result.queue_position is None else queued).append(result.job.job_id)
    await dispatcher.wait_idle()
    marks = ",".join("?" * len(placed))
    row = await db.fetchone(
        f"SELECT COUNT(*) FROM jobs WHERE job_id IN ({marks}) AND slot_held = 1 AND submitted_at IS NOT NULL"
        f" AND owner = ?",
        (*placed, dispatcher.owner),
    )
    if row[0] != len(placed):
        raise SystemExit(f"only {row[0]} of {len(placed)} placed jobs were submitted")
    print(json.dumps({"ready": True, "pid": os.getpid(), "owner": dispatcher.owner, "placed": placed,
                      "queued": queued}), flush=True)
    await asyncio.sleep(3600)  # until SIGKILL; nothing here is ever cleaned up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--guild", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--queue-size", type=int, default=0)
    args = parser.parse_args()
    worker_logging()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
