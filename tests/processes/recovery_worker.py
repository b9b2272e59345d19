"""The process tests/test_recovery_process.py kills with SIGKILL in the middle of its jobs.

Builds the bot's own Core on the shared database (the simulated backend, no HTTP API, a
Discord view that sees nothing), starts its dispatcher as the bot does on READY, submits ``--jobs`` jobs, waits until every placed one has been
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

from bot.core import Core
from bot.dispatch.models import Verb
from bot.settings import Settings
from tests.processes.common import ASKED_IN, BODY, KEY_ENV, MEMBER, NoDiscord, worker_logging


async def run(args: argparse.Namespace) -> None:
    settings = Settings(
        _env_file=None, discord_token="worker-bot-token", database_path=args.db,
        token_encryption_key=os.environ[KEY_ENV], pixverse_backend="simulated",
        pixverse_simulated_duration_seconds=args.duration, pixverse_queue_size=args.queue_size,
        pixverse_job_timeout_seconds=args.timeout, http_port=0,
    )
    core = await Core.open(settings, NoDiscord())
    db, dispatcher = core.db, core.dispatcher
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
