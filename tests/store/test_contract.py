"""What every store adapter guarantees, written once against the port (bot/store/__init__.py).

Run against each engine of tests/engines.py's ENGINES: capacity never over-committed,
even by placements racing from two connections; release exactly once; first in, first out per
server with the positions to match; requeue; leases and orphans; message attribution; purge.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from bot.dispatch.models import JobState, JobStatus, Verb
from bot.errors import ApiError
from bot.store import BUSY, NO_ACCOUNTS, NONE_IN_ROTATION, NewJob

GUILD = "111111111111111111"
OTHER = "222222222222222222"
A, B = "333333333333333333", "444444444444444444"
NOW = 1_800_000_000.0
OWNER = "host:ns:1:aaaa"


def new_job(guild: str = GUILD, verb: Verb = Verb.CREATE) -> NewJob:
    return NewJob(guild, "900000000000000001", "900000000000000002", verb, {"prompt": "a fox", "style": "Anime"})


async def account(stores, channel: str, *, max_jobs: int, guild: str = GUILD, user: str | None = None) -> None:
    await stores.accounts.upsert(guild_id=guild, channel_id=channel, token=f"token-of-{channel}-xxxxxxxx",
                                 discord_user_id=user or f"7{channel[1:]}", max_jobs=max_jobs)


async def place(stores, *, queue_size: int = 0, rng=None, guild: str = GUILD):
    return await stores.jobs.place(new_job(guild), now=NOW, owner=OWNER, queue_size=queue_size,
                                   rng=rng or random.Random(1))


async def error_of(coro) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        await coro
    return info.value.code, info.value.error


async def test_placement_fills_capacity_then_answers_429_or_queues(stores):
    assert await error_of(place(stores)) == (404, NO_ACCOUNTS)
    await account(stores, A, max_jobs=2)
    placed = [await place(stores) for _ in range(2)]
    assert [p.queue_position for p in placed] == [None, None]
    assert {p.job.account_channel_id for p in placed} == {A}
    assert all(p.job.status is JobStatus.CREATED and p.job.slot_held for p in placed)
    code, text = await error_of(place(stores))
    assert (code, text) == (429, BUSY)
    waiting = await place(stores, queue_size=1)
    assert waiting.queue_position == 1 and waiting.job.queued and waiting.job.account_channel_id is None
    assert (await error_of(place(stores, queue_size=1)))[0] == 429  # the queue is full too
    assert sorted(j.job_id for j in await stores.jobs.executing(GUILD)) == sorted(
        [p.job.job_id for p in placed] + [waiting.job.job_id])


async def test_accounts_out_of_rotation_take_nothing(stores):
    await account(stores, A, max_jobs=3)
    await stores.accounts.set_rotation(GUILD, A, in_rotation=False, error="Token rejected")
    assert await error_of(place(stores)) == (503, NONE_IN_ROTATION)


async def test_an_account_leaves_rotation_once_whoever_races_and_keeps_its_first_reason(connect):
    async with connect() as first, connect() as second:
        await account(first, A, max_jobs=1)
        took_out = await asyncio.gather(*(
            stores.accounts.set_rotation(GUILD, A, in_rotation=False, error=f"reason {n}")
            for n, stores in enumerate((first, second, first, second))))
        assert sorted(took_out) == [False, False, False, True]  # one call took it out
        [config] = await first.accounts.list(GUILD)
        assert (config.in_rotation, config.error) == (False, f"reason {took_out.index(True)}")
        assert not await second.accounts.set_rotation(GUILD, A, in_rotation=False, error="3 jobs in a row failed")
        assert (await first.accounts.get(GUILD, A)).error == f"reason {took_out.index(True)}"
        assert await first.accounts.set_rotation(GUILD, A, in_rotation=True)
        assert (await second.accounts.get(GUILD, A)).in_rotation


async def test_concurrent_placements_from_two_connections_never_over_commit(connect):
    async with connect() as first, connect() as second:
        await first.jobs.heartbeat(OWNER, NOW)
        await account(first, A, max_jobs=3)
        await account(first, B, max_jobs=2, user="700000000000000099")
        results = await asyncio.gather(
            *(place(stores, rng=random.Random(n)) for n, stores in enumerate([first, second] * 20)),
            return_exceptions=True,
        )
    placed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ApiError)]
    assert len(placed) == 5 and len(refused) == 35
    assert all(r.code == 429 for r in refused)
    by_account = {A: 0, B: 0}
    for p in placed:
        by_account[p.job.account_channel_id] += 1
    assert by_account == {A: 3, B: 2}


async def test_release_is_exactly_once_among_racing_paths(stores):
    await account(stores, A, max_jobs=1)
    job = (await place(stores)).job
    outcomes = await asyncio.gather(*(
        stores.jobs.release(job.job_id, status, now=NOW + 1)
        for status in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.COMPLETED)
    ))
    ended = [o.job for o in outcomes if o.job is not None]
    assert len(ended) == 1 and not ended[0].slot_held
    assert (await stores.jobs.get(job.job_id)).status is ended[0].status
    assert (await place(stores)).job.account_channel_id == A  # the one slot is free again, once


async def test_a_freed_slot_goes_to_the_oldest_waiting_job_and_positions_follow(stores):
    await account(stores, A, max_jobs=1)
    running = (await place(stores)).job
    waiting = [await place(stores, queue_size=5) for _ in range(3)]
    assert [w.queue_position for w in waiting] == [1, 2, 3]
    assert [await stores.jobs.queue_position(w.job) for w in waiting] == [1, 2, 3]
    released = await stores.jobs.release(running.job_id, JobStatus.COMPLETED, now=NOW + 1)
    assert released.others_waiting  # the caller gives the freed slot to the waiting jobs
    # Until it does, a new job queues behind them rather than taking the free slot.
    assert (await place(stores, queue_size=5)).queue_position == 4
    promoted = await stores.jobs.promote_waiting(GUILD, now=NOW + 1, owner=OWNER, rng=random.Random(3))
    assert [p.job_id for p in promoted] == [waiting[0].job.job_id]
    assert promoted[0].account_channel_id == A and promoted[0].slot_held and promoted[0].owner == OWNER
    second, third = [await stores.jobs.get(w.job.job_id) for w in waiting[1:]]
    assert [await stores.jobs.queue_position(j) for j in (second, third)] == [1, 2]
    assert [j.job_id for j in await stores.jobs.waiting(GUILD)][:2] == [second.job_id, third.job_id]
    assert await stores.jobs.guilds_with_waiting_jobs() == [GUILD]


async def test_promote_waiting_after_an_account_is_added(stores):
    await account(stores, A, max_jobs=1)
    await place(stores)
    waiting = await place(stores, queue_size=2)
    await account(stores, B, max_jobs=1, user="700000000000000098")
    promoted = await stores.jobs.promote_waiting(GUILD, now=NOW + 2, owner=OWNER, rng=random.Random(4))
    assert [(j.job_id, j.account_channel_id) for j in promoted] == [(waiting.job.job_id, B)]
    assert await stores.jobs.promote_waiting(GUILD, now=NOW + 3, owner=OWNER, rng=random.Random(4)) == []


async def test_requeue_moves_a_job_to_another_free_account_once(stores):
    await account(stores, A, max_jobs=1)
    await account(stores, B, max_jobs=1, user="700000000000000097")
    job = (await place(stores, rng=random.Random(5))).job
    other = B if job.account_channel_id == A else A
    moved, promoted = await stores.jobs.requeue(job, now=NOW + 1, owner=OWNER, rng=random.Random(6), error="refused")
    assert moved is not None and moved.account_channel_id == other and moved.placement_attempts == 1
    assert promoted == []
    # The same refusal seen twice (the job as it was before the move) moves nothing.
    assert await stores.jobs.requeue(job, now=NOW + 2, owner=OWNER, rng=random.Random(6), error="refused") == (None, [])
    # A release decided from the old read does not end the moved job either.
    stale = await stores.jobs.release(job.job_id, JobStatus.FAILED, now=NOW + 3,
                                      expected=job)
    assert stale.job is None and (await stores.jobs.get(job.job_id)).slot_held


async def test_place_on_a_given_account_and_refuse_when_it_is_full(stores):
    await account(stores, A, max_jobs=1)
    await account(stores, B, max_jobs=1, user="700000000000000096")
    follow = await stores.jobs.place_on(new_job(verb=Verb.BUTTON), account_channel_id=B, now=NOW, owner=OWNER)
    assert follow.account_channel_id == B and follow.slot_held
    code, _ = await error_of(stores.jobs.place_on(new_job(verb=Verb.BUTTON), account_channel_id=B, now=NOW,
                                                  owner=OWNER))
    assert code == 429


async def test_leases_orphans_and_claim(stores):
    await account(stores, A, max_jobs=2)
    job = (await place(stores)).job
    await stores.jobs.heartbeat(OWNER, NOW)
    assert await stores.jobs.live_owners(now=NOW + 10, ttl=30) == [OWNER]
    assert await stores.jobs.orphaned([OWNER]) == []
    assert await stores.jobs.live_owners(now=NOW + 100, ttl=30) == []
    orphans = await stores.jobs.orphaned([])
    assert [j.job_id for j in orphans] == [job.job_id]
    # Two live processes race to take it over: one wins.
    for other in ("host:ns:2:bbbb", "host:ns:3:cccc"):
        await stores.jobs.heartbeat(other, NOW + 100)
    wins = await asyncio.gather(stores.jobs.claim(orphans[0], "host:ns:2:bbbb"),
                                stores.jobs.claim(orphans[0], "host:ns:3:cccc"))
    assert sorted(wins) == [False, True]
    await stores.jobs.forget_dead_owners(now=NOW + 1000, ttl=30)
    assert await stores.jobs.live_owners(now=NOW, ttl=10**6) == []


async def test_a_lease_says_what_its_process_follows(stores):
    """Kept as written with each renewal; a process of an earlier version writes nothing (None)."""
    await stores.jobs.heartbeat("host:ns:2:bbbb", NOW, follows="2:0,1")
    await stores.jobs.heartbeat("host:ns:3:cccc", NOW, follows="all")
    await stores.jobs.heartbeat("host:ns:2:bbbb", NOW + 5, follows="3:2")
    assert await stores.jobs.live_follows(now=NOW + 10, ttl=30) == {
        OWNER: None, "host:ns:2:bbbb": "3:2", "host:ns:3:cccc": "all"}
    assert await stores.jobs.live_follows(now=NOW + 32, ttl=30) == {"host:ns:2:bbbb": "3:2"}
    # The schema keeps to what a process writes (bot.shards.claim): anything else is refused, nothing kept.
    for bad in ("2:", "1x:0", "2:0,,1", "2:0,", "0:1", "2:1:3", "all ", "", "2:-1"):
        with pytest.raises(Exception) as refused:
            await stores.jobs.heartbeat("host:ns:4:dddd", NOW + 5, follows=bad)
        assert "check" in str(refused.value).lower() or "constraint" in str(refused.value).lower(), bad
    assert "host:ns:4:dddd" not in await stores.jobs.live_follows(now=NOW + 10, ttl=30)


async def test_a_forgotten_process_leaves_its_jobs_to_recovery(stores):
    """The owner is a process with a lease: when a dead one's lease is forgotten, its live jobs
    are left with no owner, and recovery finds them (the store keeps no dangling owner)."""
    await account(stores, A, max_jobs=2)
    job = (await place(stores)).job
    assert job.owner == OWNER
    await stores.jobs.forget_owner(OWNER)
    orphans = await stores.jobs.orphaned(["host:ns:9:zzzz"])
    assert [(j.job_id, j.owner) for j in orphans] == [(job.job_id, None)]
    await stores.jobs.heartbeat("host:ns:9:zzzz", NOW + 1)
    assert await stores.jobs.claim(orphans[0], "host:ns:9:zzzz")
    assert await stores.jobs.orphaned(["host:ns:9:zzzz"]) == []


async def test_a_job_is_submitted_once_and_its_messages_stay_attributed(stores):
    await account(stores, A, max_jobs=1)
    job = (await place(stores)).job
    assert await stores.jobs.mark_submitted(job, NOW + 1, owner=OWNER)
    assert [j.job_id for j in await stores.jobs.open_at_pixverse(A)] == [job.job_id]
    started = await stores.jobs.record_progress(job.job_id, JobStatus.STARTED, now=NOW + 2, message_id="m1",
                                                progress=None, content=None)
    assert started is not None and started.status is JobStatus.STARTED
    again = await stores.jobs.record_progress(job.job_id, JobStatus.PROGRESS, now=NOW + 3, message_id="m1",
                                              progress=37, content=None)
    assert again is None  # "started" is told once
    assert (await stores.jobs.get(job.job_id)).progress == 37
    await stores.jobs.remember_message("m1", job.job_id)
    await stores.jobs.remember_message("m1", "job:another")  # the first attribution stands
    assert await stores.jobs.job_of_message("m1") == job.job_id
    assert await stores.jobs.close_at_pixverse(job.job_id) is True
    assert await stores.jobs.close_at_pixverse(job.job_id) is False


async def test_a_progress_edit_of_an_attributed_message_is_one_guarded_write(stores):
    user = "700000000000000042"
    await account(stores, A, max_jobs=2, user=user)
    job = (await place(stores)).job

    async def progress(percent: int, *, message: str = "m1", channel: str = A, guild: str = GUILD,
                       users=(user,), status=JobStatus.PROGRESS):
        return await stores.jobs.record_message_progress(
            message, status, account_channel_id=channel, guild_id=guild, for_users=users, now=NOW + percent,
            progress=percent, content=f"({percent}%)")

    assert await progress(5) is None  # no message attributed yet
    await stores.jobs.remember_message("m1", job.job_id)
    assert await progress(6) is None  # not sent to PixVerse yet
    assert await stores.jobs.mark_submitted(job, NOW + 1, owner=OWNER)
    assert await progress(7) is None  # still "created": record_progress tells "started" first
    await stores.jobs.record_progress(job.job_id, JobStatus.STARTED, now=NOW + 2, message_id="m1", progress=None,
                                      content=None)
    written = await progress(37)
    assert written is not None and written.job_id == job.job_id
    assert (written.status, written.progress, written.content, written.message_id, written.updated_at) == (
        JobStatus.PROGRESS, 37, "(37%)", "m1", NOW + 37)
    assert (await stores.jobs.get(job.job_id)).progress == 37
    # Each guard: nothing written.
    assert await progress(40, message="m2") is None  # another message
    assert await progress(41, channel=B) is None  # the job is not on that account
    assert await progress(42, guild=OTHER) is None  # not that server's configuration
    assert await progress(43, users=("700000000000000099",)) is None  # a message for another user
    assert await progress(44, users=()) is None
    assert (await stores.jobs.get(job.job_id)).progress == 37
    assert (await progress(45, users=("700000000000000099", user))).progress == 45  # one of its users
    assert (await stores.jobs.release(job.job_id, JobStatus.COMPLETED, now=NOW + 50)).job is not None
    assert await progress(46) is None  # ended
    assert (await stores.jobs.get(job.job_id)).progress == 45


async def test_the_account_channels_of_every_server(stores):
    assert await stores.accounts.channel_ids() == set()
    await account(stores, A, max_jobs=1)
    await account(stores, B, max_jobs=1, guild=OTHER, user="700000000000000098")
    assert await stores.accounts.channel_ids() == {A, B}
    assert await stores.accounts.delete(GUILD, A)
    assert await stores.accounts.channel_ids() == {B}


async def test_timeouts_come_back_in_submission_order_across_accounts_and_the_queue(stores):
    await account(stores, A, max_jobs=1)
    first = (await place(stores)).job
    waiting = (await place(stores, queue_size=1)).job  # older than the job placed next
    await account(stores, B, max_jobs=1, user="700000000000000094")
    later = await stores.jobs.place_on(new_job(verb=Verb.BUTTON), account_channel_id=B, now=NOW, owner=OWNER)
    due = await stores.jobs.timed_out(now=NOW + 1000, timeout=900)
    assert [j.job_id for j in due] == [first.job_id, waiting.job_id, later.job_id]


async def test_a_job_is_marked_submitted_only_once(stores):
    await account(stores, A, max_jobs=1)
    job = (await place(stores)).job
    first, second = await asyncio.gather(stores.jobs.mark_submitted(job, NOW + 1, owner=OWNER),
                                         stores.jobs.mark_submitted(job, NOW + 2, owner=OWNER))
    assert sorted([first, second]) == [False, True]
    assert (await stores.jobs.get(job.job_id)).submitted_at == NOW + (1 if first else 2)


async def test_timeouts_and_purge_read_only_what_is_due(stores):
    await account(stores, A, max_jobs=1)
    running = (await place(stores)).job
    waiting = (await place(stores, queue_size=1)).job
    assert await stores.jobs.timed_out(now=NOW + 10, timeout=900) == []
    due = await stores.jobs.timed_out(now=NOW + 1000, timeout=900)
    assert [j.job_id for j in due] == [running.job_id, waiting.job_id]  # in submission order
    released = await stores.jobs.release(running.job_id, JobStatus.COMPLETED, now=NOW + 1)
    assert released.others_waiting
    promoted = await stores.jobs.promote_waiting(GUILD, now=NOW + 1, owner=OWNER, rng=random.Random(8))
    assert [p.job_id for p in promoted] == [waiting.job_id]
    await stores.jobs.release(waiting.job_id, JobStatus.CANCELLED, now=NOW + 2)
    assert not (await stores.jobs.get(waiting.job_id)).slot_held
    assert await stores.jobs.purge(before=NOW - 1) == 0  # nothing is that old
    assert await stores.jobs.purge(before=NOW + 10**6) == 2  # both ended: gone
    assert await stores.jobs.get(running.job_id) is None and await stores.jobs.get(waiting.job_id) is None


async def test_servers_are_isolated(stores):
    await account(stores, A, max_jobs=1)
    await account(stores, B, max_jobs=1, guild=OTHER, user="700000000000000095")
    mine = (await place(stores)).job
    assert (await place(stores, guild=OTHER)).job.account_channel_id == B
    assert await stores.jobs.get(mine.job_id, OTHER) is None
    assert [j.job_id for j in await stores.jobs.executing(GUILD)] == [mine.job_id]


async def test_api_tokens(stores):
    token = await stores.tokens.create(GUILD, "900000000000000001")
    assert await stores.tokens.guild_of(token) == GUILD
    assert await stores.tokens.revoke_all(GUILD) == 1
    assert await stores.tokens.guild_of(token) is None


async def test_live_jobs_and_accounts_are_counted_across_servers(stores):
    """What /metrics shows of the database: jobs holding a slot and waiting, accounts by rotation."""
    assert await stores.jobs.live_counts() == (0, 0)
    assert await stores.accounts.rotation_counts() == (0, 0)
    await account(stores, A, max_jobs=1)
    await account(stores, B, max_jobs=1, guild=OTHER, user="700000000000000096")
    running = (await place(stores)).job
    await place(stores, guild=OTHER)
    waiting = (await place(stores, queue_size=2)).job
    assert await stores.jobs.live_counts() == (2, 1)
    await stores.accounts.set_rotation(OTHER, B, in_rotation=False, error="Token rejected")
    assert await stores.accounts.rotation_counts() == (1, 1)
    await stores.jobs.release(running.job_id, JobStatus.COMPLETED, now=NOW)
    await stores.jobs.release(waiting.job_id, JobStatus.CANCELLED, now=NOW)
    assert await stores.jobs.live_counts() == (1, 0)  # ended jobs are not counted


async def test_the_choice_among_free_accounts_is_uniform(stores):
    await account(stores, A, max_jobs=2)
    await account(stores, B, max_jobs=2, user="700000000000000099")
    third = "555555555555555555"
    await account(stores, third, max_jobs=2, user="700000000000000098")
    rng = random.Random(20261201)
    picked: dict[str, int] = {}
    for _ in range(300):
        placed = await place(stores, rng=rng)
        picked[placed.job.account_channel_id] = picked.get(placed.job.account_channel_id, 0) + 1
        await stores.jobs.release(placed.job.job_id, JobStatus.COMPLETED, now=NOW)
    # 100 expected each; below 60 is five standard deviations off (a store that always picks one
    # account, or never the last, fails at once).
    assert set(picked) == {A, B, third} and min(picked.values()) >= 60, picked


async def test_a_release_racing_a_queued_placement_never_strands_the_waiting_job(connect):
    """The last slot is freed while a new job of the server is being queued: either the new job
    sees the slot free and takes it, or the release sees the job waiting and says so (the caller
    then promotes it). Never both missed: a job waiting beside a free slot."""
    async with connect() as first, connect() as second:
        await first.jobs.heartbeat(OWNER, NOW)
        await account(first, A, max_jobs=1)
        for n in range(25):
            running = (await place(first, queue_size=5, rng=random.Random(n))).job
            assert running.slot_held
            released, placed = await asyncio.gather(
                first.jobs.release(running.job_id, JobStatus.COMPLETED, now=NOW),
                place(second, queue_size=5, rng=random.Random(100 + n)),
            )
            assert released.job is not None
            assert placed.queue_position is None or released.others_waiting, n
            if placed.queue_position is not None:
                promoted = await first.jobs.promote_waiting(GUILD, now=NOW, owner=OWNER, rng=random.Random(n))
                assert [j.job_id for j in promoted] == [placed.job.job_id]
            await first.jobs.release(placed.job.job_id, JobStatus.COMPLETED, now=NOW)
            assert await first.jobs.executing(GUILD) == []


async def test_a_requeue_racing_a_release_never_brings_an_ended_job_back(connect):
    async with connect() as first, connect() as second:
        await first.jobs.heartbeat(OWNER, NOW)
        await account(first, A, max_jobs=1)
        await account(first, B, max_jobs=1, user="700000000000000099")
        for n in range(20):
            job = (await place(first, rng=random.Random(n))).job
            (moved, _), released = await asyncio.gather(
                first.jobs.requeue(job, now=NOW, owner=OWNER, rng=random.Random(n), error="refused"),
                second.jobs.release(job.job_id, JobStatus.CANCELLED, now=NOW, expected=None),
            )
            final = await first.jobs.get(job.job_id)
            if released.job is not None and released.job.version == job.version:
                # Cancelled where it was: it stays ended, whatever the requeue did first or after.
                assert final.state is JobState.DONE and final.status is JobStatus.CANCELLED, n
            assert not (moved is not None and final.state is not JobState.DONE and released.job is not None), n
            if final.state is not JobState.DONE:
                await first.jobs.release(job.job_id, JobStatus.COMPLETED, now=NOW)
            assert await first.jobs.executing(GUILD) == []


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def image_job(guild: str = GUILD, data: bytes = PNG) -> NewJob:
    from bot.dispatch.images import Image

    return NewJob(guild, "900000000000000001", "900000000000000002", Verb.ANIMATE,
                  {"image": {"filename": "cat.png", "size": len(data)}, "motion": 5},
                  images={"image": Image("cat.png", data)})


async def test_a_jobs_images_live_exactly_as_long_as_the_job(stores):
    await account(stores, A, max_jobs=1)
    running = (await stores.jobs.place(image_job(), now=NOW, owner=OWNER, queue_size=1, rng=random.Random(1))).job
    waiting = await stores.jobs.place(image_job(data=PNG + b"2"), now=NOW, owner=OWNER, queue_size=1,
                                      rng=random.Random(1))
    assert waiting.queue_position == 1
    # A refused job (the queue is full) leaves no image behind.
    assert (await error_of(stores.jobs.place(image_job(), now=NOW, owner=OWNER, queue_size=1,
                                             rng=random.Random(1))))[0] == 429
    stored = await stores.jobs.images(running.job_id)
    assert {name: (image.filename, image.data) for name, image in stored.items()} == {"image": ("cat.png", PNG)}
    assert (await stores.jobs.images(waiting.job.job_id))["image"].data == PNG + b"2"
    # The freed slot goes to the waiting job: it is placed with its image still there.
    await stores.jobs.release(running.job_id, JobStatus.COMPLETED, now=NOW + 1)
    assert await stores.jobs.images(running.job_id) == {}
    promoted = await stores.jobs.promote_waiting(GUILD, now=NOW + 1, owner=OWNER, rng=random.Random(1))
    assert [job.job_id for job in promoted] == [waiting.job.job_id]
    assert (await stores.jobs.images(waiting.job.job_id))["image"].data == PNG + b"2"
    await stores.jobs.release(waiting.job.job_id, JobStatus.CANCELLED, now=NOW + 2)
    assert await stores.jobs.images(waiting.job.job_id) == {}
    assert await stores.jobs.images("job:none") == {}


async def test_images_follow_a_job_put_on_a_given_account(stores):
    await account(stores, A, max_jobs=1)
    job = await stores.jobs.place_on(image_job(), account_channel_id=A, now=NOW, owner=OWNER)
    assert (await stores.jobs.images(job.job_id))["image"].data == PNG
    assert (await error_of(stores.jobs.place_on(image_job(), account_channel_id=A, now=NOW, owner=OWNER)))[0] == 429
    await stores.jobs.release(job.job_id, JobStatus.FAILED, now=NOW + 1, fields={"error": "x"})
    assert await stores.jobs.images(job.job_id) == {}


async def test_a_final_message_keeps_its_timestamp_and_embeds(stores):
    from bot.dispatch.backends.base import JobUpdate
    from bot.store import result_fields

    await account(stores, A, max_jobs=1)
    job = (await place(stores)).job
    embeds = ({"type": "rich", "title": "Banned prompt", "description": "a fox"},)
    update = JobUpdate(JobStatus.MODERATED, message_id="1234", content="x", error="Banned prompt",
                       timestamp="2026-12-01T10:00:00.000000+00:00", embeds=embeds)
    ended = (await stores.jobs.release(job.job_id, JobStatus.MODERATED, now=NOW + 1, fields=result_fields(update))).job
    again = await stores.jobs.get(job.job_id)
    for seen in (ended, again):
        assert seen.message_timestamp == "2026-12-01T10:00:00.000000+00:00"
        assert seen.embeds == list(embeds)
        assert seen.to_public()["timestamp"] == "2026-12-01T10:00:00.000000+00:00"
        assert seen.to_public()["embeds"] == list(embeds)


async def test_server_settings_have_defaults_and_keep_what_a_manager_set(stores):
    from bot.store import ServerSettings

    assert await stores.servers.get(GUILD) == ServerSettings(buttons="requester")
    assert await stores.servers.set(GUILD, buttons="everyone") == ServerSettings(buttons="everyone")
    assert await stores.servers.get(GUILD) == ServerSettings(buttons="everyone")
    assert await stores.servers.get(OTHER) == ServerSettings(buttons="requester")  # per server
    assert await stores.servers.set(GUILD, buttons="requester") == ServerSettings(buttons="requester")
    with pytest.raises(Exception):
        await stores.servers.set(GUILD, buttons="anyone")  # the schema's CHECK
    assert await stores.servers.get(GUILD) == ServerSettings(buttons="requester")


async def test_an_alerts_channel_is_kept_beside_the_buttons_and_each_changes_alone(stores):
    from bot.store import ServerSettings

    channel = "555555555555555555"
    assert await stores.servers.set(GUILD, alerts_channel_id=channel) == ServerSettings("requester", channel)
    assert await stores.servers.set(GUILD, buttons="everyone") == ServerSettings("everyone", channel)
    assert await stores.servers.get(GUILD) == ServerSettings("everyone", channel)
    assert await stores.servers.set(GUILD, alerts_channel_id=None) == ServerSettings("everyone", None)
    assert await stores.servers.get(OTHER) == ServerSettings()
    for wrong in ("#general", "12", "5" * 30):
        with pytest.raises(Exception):
            await stores.servers.set(GUILD, alerts_channel_id=wrong)  # the schema's CHECK
    assert await stores.servers.get(GUILD) == ServerSettings("everyone", None)


async def test_the_jobs_ended_since_a_time_by_final_state_with_completed_run_times(stores):
    await account(stores, A, max_jobs=10)
    await account(stores, B, max_jobs=10, guild=OTHER)
    ends = [(JobStatus.COMPLETED, None, 30.0), (JobStatus.COMPLETED, None, 50.0), (JobStatus.FAILED, "Timed out", None),
            (JobStatus.FAILED, "PixVerse said no", None), (JobStatus.MODERATED, "Banned prompt", None),
            (JobStatus.CANCELLED, "Cancelled", None)]
    for status, error, run in ends:
        job = (await place(stores)).job
        if run is not None:
            assert await stores.jobs.mark_submitted(job, NOW + 100, owner=OWNER)
        fields = {"error": error} if error else {}
        await stores.jobs.release(job.job_id, status, now=NOW + 100 + (run or 1), fields=fields)
    old = (await place(stores)).job
    await stores.jobs.release(old.job_id, JobStatus.COMPLETED, now=NOW)  # before the window
    await place(stores)  # still executing: not counted
    other = (await place(stores, guild=OTHER)).job
    await stores.jobs.release(other.job_id, JobStatus.COMPLETED, now=NOW + 200)  # another server
    ended = await stores.jobs.ended_since(GUILD, since=NOW + 50)
    assert ended.counts == {"completed": 2, "timed_out": 1, "failed": 1, "moderated": 1, "cancelled": 1}
    assert sorted(ended.run_seconds) == [30.0, 50.0]
    assert (await stores.jobs.ended_since(GUILD, since=NOW + 10**6)).counts == {}


# --- a member's job keeps its status message; a member's last jobs -------------------------------

MEMBER, OTHER_MEMBER = "900000000000000001", "900000000000000003"


def member_job(requester: str = MEMBER, guild: str = GUILD) -> NewJob:
    return NewJob(guild, requester, "900000000000000002", Verb.CREATE, {"prompt": "a fox", "style": "Anime"})


def without_status_message(job):
    import dataclasses

    return dataclasses.replace(job, status_message_id=None, status_message_in_channel=False)


async def test_a_jobs_status_message_is_recorded_and_nothing_else_changes(stores):
    await account(stores, A, max_jobs=1)
    job = (await place(stores)).job
    assert (job.status_message_id, job.status_message_in_channel) == (None, False)
    assert await stores.jobs.mark_submitted(job, NOW + 1, owner=OWNER)
    before = await stores.jobs.get(job.job_id)
    polled, _ = await stores.jobs.get_with_token_last4(job.job_id, GUILD)  # the polled path's memo
    assert polled.status_message_id is None

    assert await stores.jobs.set_status_message(job.job_id, "600000000000000001", in_channel=False) is True
    after = await stores.jobs.get(job.job_id)
    assert (after.status_message_id, after.status_message_in_channel) == ("600000000000000001", False)
    assert after.status_message_in_channel is False
    # Nothing else moved: not updated_at, not version, not status or state (every other field equal).
    assert without_status_message(after) == before
    assert (after.updated_at, after.version, after.status, after.state) == (
        before.updated_at, before.version, before.status, before.state)
    polled, _ = await stores.jobs.get_with_token_last4(job.job_id, GUILD)
    assert (polled.status_message_id, polled.status_message_in_channel) == ("600000000000000001", False)

    # Moved to the channel (the interaction's webhook expired), then replaced by a newer message there.
    assert await stores.jobs.set_status_message(job.job_id, "600000000000000002", in_channel=True)
    seen = await stores.jobs.get(job.job_id)
    assert (seen.status_message_id, seen.status_message_in_channel) == ("600000000000000002", True)
    assert seen.status_message_in_channel is True
    assert await stores.jobs.set_status_message(job.job_id, "600000000000000003", in_channel=True)
    seen = await stores.jobs.get(job.job_id)
    assert (seen.status_message_id, seen.status_message_in_channel) == ("600000000000000003", True)
    assert without_status_message(seen) == before
    polled, _ = await stores.jobs.get_with_token_last4(job.job_id, GUILD)
    assert (polled.status_message_id, polled.status_message_in_channel) == ("600000000000000003", True)

    # A decision made on a read from before still applies: the version did not move.
    released = await stores.jobs.release(job.job_id, JobStatus.COMPLETED, now=NOW + 5, expected=before)
    assert released.job is not None and released.job.status_message_id == "600000000000000003"
    assert released.job.status_message_in_channel is True


async def test_a_status_message_is_recorded_on_an_ended_or_waiting_job_and_not_on_an_unknown_one(stores):
    await account(stores, A, max_jobs=1)
    ended = (await place(stores)).job
    waiting = (await place(stores, queue_size=5)).job
    done = (await stores.jobs.release(ended.job_id, JobStatus.FAILED, now=NOW + 3, fields={"error": "x"})).job
    # The final edit may be recorded after the job ended.
    assert await stores.jobs.set_status_message(done.job_id, "600000000000000004", in_channel=True)
    seen = await stores.jobs.get(done.job_id)
    assert (seen.status_message_id, seen.status_message_in_channel) == ("600000000000000004", True)
    assert without_status_message(seen) == done
    assert (seen.state, seen.status, seen.updated_at) == (JobState.DONE, JobStatus.FAILED, NOW + 3)
    # A waiting job keeps its place in the queue.
    assert await stores.jobs.set_status_message(waiting.job_id, "600000000000000005", in_channel=False)
    seen = await stores.jobs.get(waiting.job_id)
    assert without_status_message(seen) == waiting and seen.status_message_id == "600000000000000005"
    assert await stores.jobs.queue_position(seen) == 1
    assert await stores.jobs.set_status_message("job:none", "600000000000000006", in_channel=False) is False
    assert await stores.jobs.get("job:none") is None


async def test_recording_a_status_message_announces_nothing(stores):
    """Nothing that promotes or claims jobs is woken by it: on an engine that announces placements
    (PostgreSQL's NOTIFY), the only announcement heard is the one of a job placed with no owner."""
    from bot.store import JOBS_TOPIC

    database = stores.jobs._db
    heard: list[str | None] = []
    if not await database.listen(JOBS_TOPIC, heard.append):
        return  # SQLite announces nothing: processes poll
    await account(stores, A, max_jobs=2)
    job = (await place(stores)).job
    assert await stores.jobs.set_status_message(job.job_id, "600000000000000007", in_channel=False)
    assert await stores.jobs.set_status_message(job.job_id, "600000000000000008", in_channel=True)
    unowned = await stores.jobs.place(new_job(), now=NOW, owner=None, queue_size=0, rng=random.Random(2))
    assert unowned.job.owner is None
    # Notifications arrive in commit order: one from the recordings would come before this one.
    for _ in range(500):
        if heard:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert heard == [GUILD]


async def test_the_schema_refuses_a_channel_status_message_without_its_id(stores):
    """The CHECK itself, below the port: in_channel only with a recorded message."""
    await account(stores, A, max_jobs=1)
    job = (await place(stores)).job
    database = stores.jobs._db
    if database.engine == "sqlite":
        import sqlite3

        async def update(message_id, in_channel):
            return await database.execute(
                "UPDATE jobs SET status_message_id = ?, status_message_in_channel = ? WHERE job_id = ?",
                (message_id, in_channel, job.job_id))

        refused = sqlite3.IntegrityError
        with pytest.raises(refused, match="CHECK"):
            await update("600000000000000009", 2)  # a boolean is 0 or 1
    else:
        import asyncpg

        async def update(message_id, in_channel):
            return await database.execute(
                "UPDATE jobs SET status_message_id = $1, status_message_in_channel = $2 WHERE job_id = $3",
                message_id, bool(in_channel), job.job_id)

        refused = asyncpg.CheckViolationError
    with pytest.raises(refused, match="jobs_status_message_in_channel_needs_id"):
        await update(None, 1)
    assert await update("600000000000000009", 1) == 1
    with pytest.raises(refused, match="jobs_status_message_in_channel_needs_id"):
        await update(None, 1)  # the id cannot be dropped while the message is in the channel
    assert await update(None, 0) == 1  # no message, not in a channel: as a new job
    seen = await stores.jobs.get(job.job_id)
    assert (seen.status_message_id, seen.status_message_in_channel) == (None, False)
    assert seen == job


async def test_a_members_last_jobs_newest_first_in_that_server_only(stores):
    await account(stores, A, max_jobs=3)
    await account(stores, B, max_jobs=2, guild=OTHER, user="700000000000000095")
    mine: list[str] = []
    for n in range(12):
        mine.append((await stores.jobs.place(member_job(), now=NOW + n, owner=OWNER, queue_size=20,
                                             rng=random.Random(n))).job.job_id)
        # Interleaved: another member of the server, and the same member in another server.
        if n % 4 == 0:
            await stores.jobs.place(member_job(OTHER_MEMBER), now=NOW + n, owner=OWNER, queue_size=20,
                                    rng=random.Random(n))
            await stores.jobs.place(member_job(guild=OTHER), now=NOW + n, owner=OWNER, queue_size=20,
                                    rng=random.Random(n))
    # Finished ones are shown too: end one that runs and one that waits (mine[1] keeps its slot).
    for job_id in (mine[0], mine[2]):
        assert (await stores.jobs.release(job_id, JobStatus.CANCELLED, now=NOW + 20)).job is not None
    assert await stores.jobs.set_status_message(mine[-1], "600000000000000010", in_channel=True)

    last = await stores.jobs.of_member(GUILD, MEMBER)
    assert [j.job_id for j in last] == mine[::-1][:10]  # the default limit, newest first
    assert [j.seq for j in last] == sorted((j.seq for j in last), reverse=True)
    assert all(j.guild_id == GUILD and j.requester_id == MEMBER for j in last)
    assert (last[0].status_message_id, last[0].status_message_in_channel) == ("600000000000000010", True)
    everything = await stores.jobs.of_member(GUILD, MEMBER, limit=50)
    assert [j.job_id for j in everything] == mine[::-1]
    assert [j.state for j in everything[-3:]] == [JobState.DONE, JobState.PLACED, JobState.DONE]  # ended included
    assert {j.state for j in everything[:-3]} == {JobState.WAITING}
    assert [j.job_id for j in await stores.jobs.of_member(GUILD, MEMBER, limit=3)] == mine[::-1][:3]
    assert await stores.jobs.of_member(GUILD, MEMBER, limit=0) == []
    others = await stores.jobs.of_member(GUILD, OTHER_MEMBER)
    assert len(others) == 3 and {(j.guild_id, j.requester_id) for j in others} == {(GUILD, OTHER_MEMBER)}
    elsewhere = await stores.jobs.of_member(OTHER, MEMBER)
    assert len(elsewhere) == 3 and {(j.guild_id, j.requester_id) for j in elsewhere} == {(OTHER, MEMBER)}
    assert await stores.jobs.of_member(OTHER, OTHER_MEMBER) == []
    assert await stores.jobs.of_member("999999999999999999", MEMBER) == []


async def test_an_ended_members_job_is_looked_at_until_its_end_is_shown(stores):
    from bot.dispatch.models import API_REQUESTER
    from bot.shards import shard_of

    await account(stores, A, max_jobs=4)
    running = (await place(stores)).job
    first, second = (await place(stores)).job, (await place(stores)).job
    api = (await stores.jobs.place(NewJob(GUILD, API_REQUESTER, API_REQUESTER, Verb.CREATE, {"prompt": "a fox"}),
                                   now=NOW, owner=OWNER, queue_size=0, rng=random.Random(1))).job
    window = dict(ended_before=NOW + 100, ended_after=NOW - 100)
    assert await stores.jobs.final_not_shown(**window) == []
    assert await stores.jobs.mark_final_shown(running.job_id) is False  # not ended: nothing to show yet

    failed = (await stores.jobs.release(first.job_id, JobStatus.FAILED, now=NOW + 3, fields={"error": "x"})).job
    completed = (await stores.jobs.release(second.job_id, JobStatus.COMPLETED, now=NOW + 5)).job
    await stores.jobs.release(api.job_id, JobStatus.COMPLETED, now=NOW + 4)  # the HTTP API's: no message
    # The most recently ended first; only those ended in the window; at most ``limit``.
    assert await stores.jobs.final_not_shown(**window) == [completed, failed]
    assert await stores.jobs.final_not_shown(ended_before=NOW + 4, ended_after=NOW - 100) == [failed]
    assert await stores.jobs.final_not_shown(ended_before=NOW + 100, ended_after=NOW + 4) == [completed]
    assert await stores.jobs.final_not_shown(**window, limit=1) == [completed]
    assert await stores.jobs.final_not_shown(**window, limit=0) == []
    # Only the servers of the shards asked for.
    mine = shard_of(GUILD, 4)
    assert await stores.jobs.final_not_shown(**window, shards=(4, frozenset({mine}))) == [completed, failed]
    assert await stores.jobs.final_not_shown(**window, shards=(4, frozenset({(mine + 1) % 4}))) == []

    assert await stores.jobs.mark_final_shown(failed.job_id) is True
    assert await stores.jobs.mark_final_shown(failed.job_id) is False  # recorded once
    assert await stores.jobs.mark_final_shown(api.job_id) is False  # it had nothing to show
    assert await stores.jobs.mark_final_shown("job:none") is False
    assert await stores.jobs.final_not_shown(**window) == [completed]
    # Nothing else of the job moved (not updated_at, not version).
    assert await stores.jobs.get(failed.job_id) == failed
    assert (await stores.jobs.get(running.job_id)).state != JobState.DONE


async def test_an_ended_http_api_job_with_a_reply_url_is_looked_at_until_its_end_is_told(stores):
    from bot.dispatch.models import API_REQUESTER

    await account(stores, A, max_jobs=4)
    jobs = {}
    for name, params in (("reply", {"prompt": "a fox", "replyUrl": "https://example.com/hook"}),
                         ("none", {"prompt": "a fox"}), ("blank", {"prompt": "a fox", "replyUrl": ""})):
        jobs[name] = (await stores.jobs.place(NewJob(GUILD, API_REQUESTER, API_REQUESTER, Verb.CREATE, params),
                                              now=NOW, owner=OWNER, queue_size=0, rng=random.Random(1))).job
    jobs["member"] = (await place(stores)).job
    for n, job in enumerate(jobs.values()):
        await stores.jobs.release(job.job_id, JobStatus.COMPLETED, now=NOW + n)
    window = dict(ended_before=NOW + 100, ended_after=NOW - 100)
    # Only the API job whose caller gave a replyUrl has an end to tell (POSTed there), beside the member's.
    assert [job.job_id for job in await stores.jobs.final_not_shown(**window)] == [jobs["member"].job_id,
                                                                                   jobs["reply"].job_id]
    assert [job.job_id for job in await stores.jobs.final_not_shown(**window, through_api=True)] == [
        jobs["reply"].job_id]
    assert [job.job_id for job in await stores.jobs.final_not_shown(**window, through_api=False)] == [
        jobs["member"].job_id]
    assert await stores.jobs.mark_final_shown(jobs["none"].job_id) is False
    assert await stores.jobs.mark_final_shown(jobs["reply"].job_id) is True
    assert await stores.jobs.final_not_shown(**window, through_api=True) == []
