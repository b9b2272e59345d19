"""The dispatcher: placement, every way a job ends, the queue, timeouts, recovery."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter

import pytest

from bot.dispatch.backends.base import JobUpdate, SubmitError
from bot.dispatch.models import JobStatus, Verb
from bot.store import NewJob
from bot.errors import ApiError, StoreUnavailable
from cogs.jobs.presenting import status_message
from tests.dispatch_support import Clock, Listener, ManualBackend, add_account, jobs_of, make_dispatcher, slots

G = "900000000000000001"
A1, A2, A3, A4 = (f"90000000000000001{n}" for n in range(1, 5))
MEMBER = "950000000000000001"
ASKED_IN = "960000000000000001"
BODY = {"prompt": "a red fox", "style": "Realistic"}


async def submit(dispatcher, body=BODY, requester=MEMBER):
    placed = await dispatcher.submit(
        guild_id=G, requester_id=requester, request_channel_id=ASKED_IN, verb=Verb.CREATE, body=body
    )
    await dispatcher.wait_idle()
    return placed


@pytest.fixture
def database(any_database):
    """Every dispatcher test runs on each engine."""
    return any_database


@pytest.fixture
def backend():
    return ManualBackend()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def listener():
    return Listener()


@pytest.fixture
async def dispatcher(database, repository, backend, clock, listener):
    d = make_dispatcher(database, repository, backend, clock=clock, listener=listener)
    yield d
    await d.close()


async def test_placement_is_uniform_and_never_picks_a_full_or_resting_account(database, repository):
    for channel, max_jobs in ((A1, 2), (A2, 2), (A3, 2), (A4, 1)):
        await add_account(repository, G, channel, max_jobs=max_jobs, user=channel[-6:])
    await repository.set_rotation(G, A3, in_rotation=False, error="Blocked")
    rng = random.Random(20261121)
    new = NewJob(G, MEMBER, ASKED_IN, Verb.CREATE, dict(BODY))
    jobs = jobs_of(database)
    await jobs.heartbeat("t", 1.0)  # a job's owner holds a lease
    # A1 holds one job for the whole run: it keeps one free slot and must stay as likely as A2.
    held = await jobs.place_on(new, account_channel_id=A1, now=1.0, owner="t")
    counts: Counter[str] = Counter()
    n = 3_000
    for _ in range(n):
        placed = await jobs.place(new, now=1.0, owner="t", queue_size=0, rng=rng)
        counts[placed.job.account_channel_id] += 1
        await jobs.release(placed.job.job_id, JobStatus.COMPLETED, now=1.0)
    assert set(counts) == {A1, A2, A4}  # A3 rests out of rotation
    expected = n / 3
    chi_square = sum((counts[a] - expected) ** 2 / expected for a in (A1, A2, A4))
    assert chi_square < 13.82, (counts, chi_square)  # df = 2, p = 0.001

    # Full accounts are never picked: fill every slot, then the next one is 429.
    fill = [await jobs.place(new, now=1.0, owner="t", queue_size=0, rng=rng) for _ in range(4)]
    assert Counter([p.job.account_channel_id for p in fill] + [held.account_channel_id]) == {A1: 2, A2: 2, A4: 1}
    with pytest.raises(ApiError) as info:
        await jobs.place(new, now=1.0, owner="t", queue_size=0, rng=rng)
    assert (info.value.code, info.value.error) == (429, "All PixVerse accounts are busy")
    assert len(info.value.extra["executingJobs"]) == 5


async def test_no_account_and_none_in_rotation(dispatcher, repository):
    with pytest.raises(ApiError) as info:
        await submit(dispatcher)
    assert info.value.code == 404
    assert info.value.error == (
        "No PixVerse account is configured in this server; a server manager can add one with /pixverse-account"
    )
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await repository.set_rotation(G, A1, in_rotation=False, error="Blocked")
    with pytest.raises(ApiError) as info:
        await submit(dispatcher)
    assert info.value.code == 503


async def test_create_is_submitted_with_the_account_token_and_completes(dispatcher, repository, backend, database, listener):
    await add_account(repository, G, A1, max_jobs=2, user="1")
    placed = await submit(dispatcher)
    job = placed.job
    assert placed.queue_position is None and job.account_channel_id == A1 and job.max_jobs == 2
    assert backend.submitted == [(job.job_id, f"token-for-{A1}")]
    assert await slots(database, A1) == 1
    await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.STARTED, message_id="m1"))
    await dispatcher.job_update(job.job_id, JobUpdate(JobStatus.PROGRESS, message_id="m1", progress=37))
    stored = await dispatcher.get(job.job_id, G)
    assert (stored.status, stored.progress, stored.message_id) == (JobStatus.PROGRESS, 37, "m1")
    await backend.complete(job.job_id)
    done = await dispatcher.get(job.job_id, G)
    assert done.status is JobStatus.COMPLETED
    assert [b["label"] for b in done.buttons] == ["U1", "V1", "ReDo"]
    assert done.attachments[0]["url"] == "https://cdn.example/v.mp4"
    assert await slots(database, A1) == 0
    # The member hears about started and the final state, once each.
    assert listener.seen == [(job.job_id, "started"), (job.job_id, "completed")]


@pytest.mark.parametrize(
    ("ending", "status", "error"),
    [
        ("completed", JobStatus.COMPLETED, None),
        ("failed", JobStatus.FAILED, "Failed: something"),
        ("moderated", JobStatus.MODERATED, "Banned prompt"),
        ("cancelled", JobStatus.CANCELLED, f"Cancelled by <@{MEMBER}>"),
        ("timeout", JobStatus.FAILED, "Timed out"),
        ("deleted", JobStatus.FAILED, "The PixVerse account was deleted"),
        ("rejected", JobStatus.FAILED, "The PixVerse account left rotation: Discord answered 401"),
    ],
)
async def test_every_ending_releases_the_slot_exactly_once(
    dispatcher, repository, backend, database, clock, ending, status, error
):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    assert await slots(database, A1) == 1
    if ending in ("completed",):
        await backend.complete(job.job_id)
    elif ending in ("failed", "moderated"):
        await dispatcher.job_update(job.job_id, JobUpdate(status, error=error, error_details="details"))
    elif ending == "cancelled":
        await dispatcher.cancel(job.job_id, guild_id=G, user_id=MEMBER, is_manager=False)
    elif ending == "timeout":
        clock.now += 901
        await dispatcher.sweep()
    elif ending == "deleted":
        await dispatcher.account_removed(G, A1, reason="The PixVerse account was deleted")
    elif ending == "rejected":
        await dispatcher.job_update(job.job_id, JobUpdate(account_rejected="Discord answered 401"))
    ended = await dispatcher.get(job.job_id, G)
    assert (ended.status, ended.error) == (status, error)
    assert await slots(database, A1) == 0
    # Whatever arrives afterwards changes nothing and frees nothing twice.
    assert not await dispatcher.finish(job.job_id, JobStatus.FAILED, error="late")
    await backend.complete(job.job_id)
    again = await dispatcher.get(job.job_id, G)
    assert (again.status, again.error) == (status, error)
    assert await slots(database, A1) == 0
    # The slot is usable again (unless the account left rotation).
    if ending != "rejected":
        assert (await submit(dispatcher)).job.account_channel_id == A1


async def test_racing_endings_release_once(dispatcher, repository, backend, database, listener):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    results = await asyncio.gather(
        dispatcher.finish(job.job_id, JobStatus.CANCELLED),
        dispatcher.finish(job.job_id, JobStatus.FAILED, error="Timed out"),
        dispatcher.account_removed(G, A1, reason="deleted"),
        backend.complete(job.job_id),
    )
    assert sum(result is not None for result in results[:2]) <= 1
    assert await slots(database, A1) == 0
    finals = [s for j, s in listener.seen if j == job.job_id]
    assert len(finals) == 1


async def test_cancel_rules(dispatcher, repository):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    with pytest.raises(ApiError) as info:
        await dispatcher.cancel(job.job_id, guild_id=G, user_id="someone-else", is_manager=False)
    assert (info.value.code, info.value.error) == (
        403, f"Only the member who asked for job {job.job_id} or a server manager can cancel it"
    )
    with pytest.raises(ApiError) as info:
        await dispatcher.cancel(job.job_id, guild_id="another-guild", user_id=MEMBER, is_manager=True)
    assert (info.value.code, info.value.error) == (404, f"Unable to locate job {job.job_id}")
    cancelled = await dispatcher.cancel(job.job_id, guild_id=G, user_id="a-manager", is_manager=True)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(ApiError) as info:
        await dispatcher.cancel(job.job_id, guild_id=G, user_id=MEMBER, is_manager=False)
    assert (info.value.code, info.value.error) == (409, f"Job {job.job_id} is already cancelled")


async def test_queue_is_first_in_first_out_with_positions(database, repository, backend, clock):
    dispatcher = make_dispatcher(database, repository, backend, clock=clock, queue_size=3)
    try:
        await add_account(repository, G, A1, max_jobs=1, user="1")
        running = await submit(dispatcher)
        waiting = [await submit(dispatcher, body={"prompt": f"p{i}", "style": "Anime"}) for i in range(3)]
        assert running.queue_position is None
        assert [w.queue_position for w in waiting] == [1, 2, 3]
        with pytest.raises(ApiError) as info:
            await submit(dispatcher)
        assert info.value.code == 429
        assert backend.submitted == [(running.job.job_id, f"token-for-{A1}")]

        await backend.complete(running.job.job_id)
        await dispatcher.wait_idle()
        # The oldest waiting job took the slot and was submitted; the others moved up.
        assert [j for j, _ in backend.submitted][1] == waiting[0].job.job_id
        positions = [await dispatcher.queue_position(await dispatcher.get(w.job.job_id, G)) for w in waiting]
        assert positions == [None, 1, 2]
        # Cancelling a waiting job takes it out of the queue without touching a slot.
        await dispatcher.cancel(waiting[1].job.job_id, guild_id=G, user_id=MEMBER, is_manager=False)
        assert await dispatcher.queue_position(await dispatcher.get(waiting[2].job.job_id, G)) == 1
        assert await slots(database, A1) == 1
    finally:
        await dispatcher.close()


async def test_a_release_stays_reported_when_the_promotion_after_it_fails(database, repository, backend, clock,
                                                                        listener, monkeypatch):
    """The release commits on its own; if giving the freed slot to the waiting job then fails
    (the file locked by another process past the busy timeout), the job is still reported as
    ended, once, and the next sweep promotes the waiting job."""
    from bot.errors import StoreBusy
    from bot.store.postgres import jobs as postgres_placement
    from bot.store.sqlite import placement as sqlite_placement

    dispatcher = make_dispatcher(database, repository, backend, clock=clock, queue_size=1, listener=listener)
    try:
        await add_account(repository, G, A1, max_jobs=1, user="1")
        running = (await submit(dispatcher)).job
        waiting = (await submit(dispatcher, body={"prompt": "second", "style": "Anime"})).job
        # The promotion's transaction, in either adapter.
        if database.engine == "postgresql":
            placement, name = postgres_placement, "_promote"
        else:
            placement, name = sqlite_placement, "promote"
        promote = getattr(placement, name)

        async def locked(*args, **kwargs):
            raise StoreBusy("database is locked")

        monkeypatch.setattr(placement, name, locked)
        ended = await dispatcher.finish(running.job_id, JobStatus.COMPLETED)
        assert ended is not None and ended.status is JobStatus.COMPLETED
        await dispatcher.wait_idle()
        assert [seen for seen in listener.seen if seen[0] == running.job_id] == [(running.job_id, "completed")]
        assert (await dispatcher.get(waiting.job_id, G)).queued  # still waiting, the slot free

        monkeypatch.setattr(placement, name, promote)
        await dispatcher.sweep()
        await dispatcher.wait_idle()
        assert (await dispatcher.get(waiting.job_id, G)).slot_held
        assert [j for j, _ in backend.submitted] == [running.job_id, waiting.job_id]
    finally:
        await dispatcher.close()


async def test_button_runs_on_the_original_account(dispatcher, repository, backend, database):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await add_account(repository, G, A2, max_jobs=1, user="2")
    parent = (await submit(dispatcher)).job
    await backend.complete(parent.job_id)
    # Fill the other account so only the parent's account matters. Placement is random: a job
    # that lands on the parent's account is completed and the next one tried.
    while (other := (await submit(dispatcher)).job).account_channel_id == parent.account_channel_id:
        await backend.complete(other.job_id)
    press = dict(guild_id=G, requester_id=MEMBER, request_channel_id=ASKED_IN, job_id=parent.job_id)
    follow = await dispatcher.press(button="U1", **press)
    await dispatcher.wait_idle()
    assert follow.account_channel_id == parent.account_channel_id
    assert backend.pressed == [(follow.job_id, parent.job_id, f"token-for-{parent.account_channel_id}")]
    with pytest.raises(ApiError) as info:
        await dispatcher.press(button="U1", **press)
    assert info.value.code == 429
    assert info.value.error == f"The PixVerse account of channel {parent.account_channel_id} is busy"
    with pytest.raises(ApiError) as info:
        await dispatcher.press(button="U4", **press)
    assert (info.value.code, info.value.error) == (400, "Required param button (U4) is not one of U1, V1, ReDo")
    await repository.set_rotation(G, parent.account_channel_id, in_rotation=False, error="Blocked")
    await dispatcher.finish(follow.job_id, JobStatus.COMPLETED)
    with pytest.raises(ApiError) as info:
        await dispatcher.press(button="U1", **press)
    assert (info.value.code, info.value.error) == (
        409, f"The PixVerse account of channel {parent.account_channel_id} is out of rotation: Blocked"
    )


async def test_rejected_account_leaves_rotation_and_the_job_moves_once(dispatcher, repository, backend, database):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await add_account(repository, G, A2, max_jobs=1, user="2")
    backend.fail_next = SubmitError("Discord answered 401 for the account's token", account_rejected=True)
    job = (await submit(dispatcher)).job
    first = job.account_channel_id
    moved = await dispatcher.get(job.job_id, G)
    second = A2 if first == A1 else A1
    assert moved.account_channel_id == second and moved.status is JobStatus.CREATED
    assert backend.submitted == [(job.job_id, f"token-for-{second}")]
    resting = await repository.get(G, first)
    assert (resting.in_rotation, resting.error) == (False, "Discord answered 401 for the account's token")
    assert await slots(database, first) == 0 and await slots(database, second) == 1
    # Saving the account again or a reset puts it back.
    await repository.set_rotation(G, first, in_rotation=True)
    assert (await repository.get(G, first)).in_rotation


async def test_a_moved_job_shows_its_member_no_account_and_no_reason_once_it_completes(
        dispatcher, repository, backend, database):
    """The move leaves a note for the admins (GET /jobs/?jobid=), naming the refused account's
    channel: a member's message for the job names neither, completed or failed for another reason."""
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await add_account(repository, G, A2, max_jobs=1, user="2")
    backend.fail_next = SubmitError("Discord answered 401 for the account's token", account_rejected=True)
    job = (await submit(dispatcher)).job
    moved = await dispatcher.get(job.job_id, G)
    refused = A2 if moved.account_channel_id == A1 else A1
    assert moved.error_details == f"Moved from channel {refused}: Discord answered 401 for the account's token"
    await backend.complete(job.job_id)
    await dispatcher.wait_idle()
    done = await dispatcher.get(job.job_id, G)
    assert done.status is JobStatus.COMPLETED and done.error_details == moved.error_details  # the admins' note
    shown = status_message(done, mention=True)
    assert "Reason" not in [field.name for field in shown.embed.fields]
    assert refused not in str(shown.embed.to_dict()) + shown.content

    # Moved again, then ended by its second account leaving: the end's own reason, not the move's note.
    backend.fail_next = SubmitError("Discord answered 401 for the account's token", account_rejected=True)
    await repository.set_rotation(G, refused, in_rotation=True)
    job = (await submit(dispatcher)).job
    moved = await dispatcher.get(job.job_id, G)
    assert moved.error_details.startswith("Moved from channel ")
    await dispatcher.account_removed(G, moved.account_channel_id, reason="The PixVerse account was deleted")
    failed = await dispatcher.get(job.job_id, G)
    assert (failed.status, failed.error, failed.error_details) == (
        JobStatus.FAILED, "The PixVerse account was deleted", None)
    reason = {field.name: field.value for field in status_message(failed, mention=True).embed.fields}["Reason"]
    assert reason == "The PixVerse account was deleted"


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
async def test_discords_words_in_a_failure_are_kept_as_text_every_engine_stores(
        dispatcher, repository, backend, database, bad):
    """A failure's reason and details may carry Discord's words (its error message, PixVerse's
    option names), kept with the job and the account: a NUL or a lone surrogate there reads as
    U+FFFD, and the account still leaves rotation, the job still ends, its slot freed."""
    await add_account(repository, G, A1, max_jobs=1, user="1")
    backend.fail_next = SubmitError(f"Discord refused{bad}", account_rejected=True, details=f"401: {bad}")
    job = (await submit(dispatcher)).job
    resting = await repository.get(G, A1)
    assert (resting.in_rotation, resting.error, resting.error_details) == (False, "Discord refused\ufffd", "401: \ufffd")
    ended = await dispatcher.get(job.job_id, G)
    assert (ended.status, ended.error) == (JobStatus.FAILED, "The PixVerse account left rotation: Discord refused\ufffd")
    assert await slots(database, A1) == 0
    backend.fail_next = SubmitError("PixVerse could not be reached on Discord", details=f"index: {bad}")
    await repository.set_rotation(G, A1, in_rotation=True)
    job = (await submit(dispatcher)).job
    failed = await dispatcher.get(job.job_id, G)
    assert (failed.status, failed.error, failed.error_details) == (
        JobStatus.FAILED, "PixVerse could not be reached on Discord", "index: \ufffd")
    assert await slots(database, A1) == 0


async def test_a_job_placed_as_the_database_blips_is_sent_once_it_answers(dispatcher, repository, backend, database,
                                                                         monkeypatch, caplog):
    """Sending a placed job reads its token and marks it sent. With the database away there, ending
    the job failed too, and the job kept its slot unsent until its timeout: it is tried again."""
    from bot.dispatch import dispatcher as dispatching
    from bot.errors import StoreBusy, StoreUnavailable

    monkeypatch.setattr(dispatching, "RUN_RETRY_FIRST_SECONDS", 0.01)
    await add_account(repository, G, A1, max_jobs=1, user="1")
    failures = [StoreUnavailable("ConnectionResetError"), StoreBusy("database is locked")]
    real = repository.decrypt_token

    async def flaky(*args, **kwargs):
        if failures:
            raise failures.pop(0)
        return await real(*args, **kwargs)

    monkeypatch.setattr(repository, "decrypt_token", flaky)
    job = (await submit(dispatcher)).job
    await dispatcher.wait_idle()
    assert backend.submitted == [(job.job_id, f"token-for-{A1}")]  # once
    sent = await dispatcher.get(job.job_id, G)
    assert sent.state.value == "submitted" and sent.status is JobStatus.CREATED
    assert await slots(database, A1) == 1
    waits = [r.getMessage() for r in caplog.records if "waits for the database" in r.getMessage()]
    assert waits == [f"Job {job.job_id} waits for the database (ConnectionResetError); tried again in 0.01 s",
                     f"Job {job.job_id} waits for the database (database is locked); tried again in 0.02 s"]


async def test_a_job_whose_mark_committed_but_its_answer_was_lost_is_sent_once(dispatcher, repository, backend,
                                                                              database, monkeypatch):
    """The connection dropped after the server committed the job's mark as sent, before the answer
    came: the try after it must not take "already sent" for someone else's send and leave it unsent."""
    from bot.dispatch import dispatcher as dispatching
    from bot.errors import StoreUnavailable

    monkeypatch.setattr(dispatching, "RUN_RETRY_FIRST_SECONDS", 0.01)
    await add_account(repository, G, A1, max_jobs=1, user="1")
    real, lost = dispatcher.jobs.mark_submitted, [True]

    async def committed_then_lost(*args, **kwargs):
        marked = await real(*args, **kwargs)
        if lost:
            lost.pop()
            raise StoreUnavailable("ConnectionResetError")
        return marked

    monkeypatch.setattr(dispatcher.jobs, "mark_submitted", committed_then_lost)
    job = (await submit(dispatcher)).job
    await dispatcher.wait_idle()
    assert backend.submitted == [(job.job_id, f"token-for-{A1}")]
    assert (await dispatcher.get(job.job_id, G)).state.value == "submitted"


async def test_a_sweep_that_stops_completing_is_told_to_the_health_check(dispatcher, repository, monkeypatch):
    """A sweep waiting for ever (a lock, a connection cut without a word) stopped timeouts, recovery
    and promotion while /healthz said 200: past 5 of its intervals (at least 2 minutes) it says so."""
    now = [1000.0]
    dispatcher.monotonic = lambda: now[0]
    await dispatcher.start()
    assert dispatcher.stalled() is None
    waiting = asyncio.Event()

    async def for_ever(**kwargs):
        await waiting.wait()
        return []

    monkeypatch.setattr(dispatcher.jobs, "timed_out", for_ever)
    sweep = asyncio.create_task(dispatcher.sweep())
    await asyncio.sleep(0)
    now[0] += 5 * dispatcher.sweep_interval  # 150 s at the default 900 s job timeout
    assert dispatcher.stalled() is None
    now[0] += 1
    assert dispatcher.stalled() == "the dispatcher's sweep has been under way for 151 s"
    waiting.set()
    await sweep
    assert dispatcher.stalled() is None  # done

    async def away(**kwargs):
        raise StoreUnavailable("ConnectionRefusedError")

    monkeypatch.setattr(dispatcher.jobs, "timed_out", away)
    with pytest.raises(StoreUnavailable):
        await dispatcher.sweep()
    now[0] += 1000
    assert dispatcher.stalled() is None  # failing fast is not stalling: the database checks say why


async def test_overloaded_job_is_retried_at_most_twice_then_fails(dispatcher, repository, backend, database):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    for attempt in range(3):
        await dispatcher.job_update(job.job_id, JobUpdate(overloaded=True, error_details="The queue is full"))
        await dispatcher.wait_idle()
    final = await dispatcher.get(job.job_id, G)
    assert (final.status, final.error) == (JobStatus.FAILED, "PixVerse is overloaded; try again later")
    assert len(backend.submitted) == 3  # the first try and two retries
    assert await slots(database, A1) == 0


async def test_repeated_failures_take_the_account_out_of_rotation(dispatcher, repository, backend):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    backend.fail_with = SubmitError("PixVerse command unavailable")
    for _ in range(3):
        job = (await submit(dispatcher)).job
        assert (await dispatcher.get(job.job_id, G)).status is JobStatus.FAILED
    account = await repository.get(G, A1)
    assert (account.in_rotation, account.error) == (False, "3 jobs in a row failed")


async def test_timeout_counts_from_submission_and_the_sweep_ends_it(dispatcher, repository, clock, database):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    clock.now += 899
    await dispatcher.sweep()
    assert (await dispatcher.get(job.job_id, G)).status is JobStatus.CREATED
    clock.now += 2
    await dispatcher.sweep()
    ended = await dispatcher.get(job.job_id, G)
    assert (ended.status, ended.error, ended.error_details) == (
        JobStatus.FAILED, "Timed out", "PixVerse did not finish the job within 900 seconds"
    )
    assert dispatcher.sweep_interval == 30.0
    assert await slots(database, A1) == 0


async def test_jobs_of_a_dead_process_are_resumed_or_failed(database, repository, clock):
    await add_account(repository, G, A1, max_jobs=2, user="1")
    dead = make_dispatcher(database, repository, ManualBackend(), clock=clock)
    dead.owner = "another-host:1:dead"
    await dead.jobs.heartbeat(dead.owner, clock.now)
    recent = (await submit(dead)).job
    clock.now += 800
    await dead.jobs.heartbeat(dead.owner, clock.now)
    old_clock_job = (await submit(dead)).job
    # The process dies (no close). Its lease expires after 3 sweep intervals.
    clock.now += 200
    backend = ManualBackend()
    alive = make_dispatcher(database, repository, backend, clock=clock)
    try:
        await alive.start()
        first = await alive.get(recent.job_id, G)
        assert (first.status, first.error) == (JobStatus.FAILED, "Timed out")
        assert backend.resumed == [old_clock_job.job_id]
        assert (await alive.get(old_clock_job.job_id, G)).owner == alive.owner
        assert await slots(database, A1) == 1
    finally:
        await alive.close()


async def test_validation_texts(dispatcher, repository):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    cases = [
        ({"style": "Anime"}, "Required param prompt is missing or empty"),
        ({"prompt": "x" * 513, "style": "Anime"}, "Required param prompt is longer than 512 characters"),
        ({"prompt": "x"}, "Required param style is missing or empty"),
        ({"prompt": "x", "style": "Pixel"}, "Required param style (Pixel) is not one of Realistic, Anime, 3D Animation"),
        ({"prompt": "x", "style": "Anime", "aspect_ratio": "2:1"},
         "Param aspect_ratio (2:1) is not one of 16:9, 9:16, 1:1, 4:3, 3:4"),
        ({"prompt": "x", "style": "Anime", "negative_prompt": "n" * 513}, "Param negative_prompt is longer than 512 characters"),
        ({"prompt": "x", "style": "Realistic", "character": "Mika"},
         "Param character is supported only with style Anime, not Realistic"),
        ({"prompt": "x", "style": "Anime", "character": "c" * 101}, "Param character is longer than 100 characters"),
        ({"prompt": "a\x00fox", "style": "Anime"}, "Required param prompt must not contain a NUL character"),
    ]
    for body, text in cases:
        with pytest.raises(ApiError) as info:
            await submit(dispatcher, body=body)
        assert (info.value.code, info.value.error) == (400, text)
    with pytest.raises(ApiError) as info:
        await dispatcher.submit(guild_id=G, requester_id=MEMBER, request_channel_id=ASKED_IN,
                                verb=Verb.CREATE_SINGLE, body={"prompt": "x", "style": "Anime", "seed": -1})
    assert info.value.error == "Param seed (-1) must be an integer from 0 to 2147483647"


async def test_a_job_cancelled_before_it_is_sent_never_reaches_pixverse(
    dispatcher, repository, backend, database, monkeypatch
):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    # The first job's run stops before it is marked as sent, until the cancel has landed.
    cancelled = asyncio.Event()
    decrypt = repository.decrypt_token

    async def decrypt_after_cancel(guild_id, channel_id):
        await cancelled.wait()
        return await decrypt(guild_id, channel_id)

    monkeypatch.setattr(repository, "decrypt_token", decrypt_after_cancel)
    placed = await dispatcher.submit(guild_id=G, requester_id=MEMBER, request_channel_id=ASKED_IN, verb=Verb.CREATE,
                                     body=BODY)
    await dispatcher.cancel(placed.job.job_id, guild_id=G, user_id=MEMBER, is_manager=False)
    cancelled.set()
    second = (await submit(dispatcher, body={"prompt": "next", "style": "Anime"})).job
    await dispatcher.wait_idle()
    # Only the second job was sent: PixVerse never runs two jobs on this maxJobs=1 account.
    assert backend.submitted == [(second.job_id, f"token-for-{A1}")]


async def test_a_release_decided_on_an_old_read_does_not_touch_a_moved_job(dispatcher, repository, database):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await add_account(repository, G, A2, max_jobs=1, user="2")
    job = (await submit(dispatcher)).job
    seen = await dispatcher.get(job.job_id, G)
    moved, _ = await jobs_of(database).requeue(seen, now=2.0, owner=dispatcher.owner, rng=random.Random(1),
                                       error="moved")
    assert moved.account_channel_id != seen.account_channel_id
    assert await dispatcher.finish(job.job_id, JobStatus.FAILED, error="stale", expected=seen) is None
    assert (await dispatcher.get(job.job_id, G)).status is JobStatus.CREATED
    assert await slots(database, moved.account_channel_id) == 1


async def test_waiting_jobs_time_out_and_end_when_no_account_is_left(database, repository, backend, clock, listener):
    dispatcher = make_dispatcher(database, repository, backend, clock=clock, queue_size=5, listener=listener)
    try:
        await add_account(repository, G, A1, max_jobs=1, user="1")
        await submit(dispatcher)
        first = (await submit(dispatcher, body={"prompt": "w1", "style": "Anime"})).job
        # It has waited longer than the timeout while the running job has not run that long.
        if database.engine == "postgresql":
            await database.execute("UPDATE jobs SET created_at = created_at - 901 WHERE job_id = $1", first.job_id)
        else:
            await database.execute("UPDATE jobs SET created_at = created_at - 901 WHERE job_id = ?", (first.job_id,))
        await dispatcher.sweep()
        ended = await dispatcher.get(first.job_id, G)
        assert (ended.status, ended.error, ended.error_details) == (
            JobStatus.FAILED, "Timed out", "No PixVerse account was free within 900 seconds"
        )
        waiting = (await submit(dispatcher, body={"prompt": "w2", "style": "Anime"}))
        assert waiting.queue_position == 1
        await repository.delete(G, A1)
        await dispatcher.account_removed(G, A1, reason="The PixVerse account was deleted")
        gone = await dispatcher.get(waiting.job.job_id, G)
        assert (gone.status, gone.error) == (JobStatus.FAILED, "No PixVerse account of this server is in rotation")
    finally:
        await dispatcher.close()


async def test_no_new_job_is_taken_while_shutting_down(database, repository, backend):
    dispatcher = make_dispatcher(database, repository, backend)
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await dispatcher.close()
    with pytest.raises(ApiError) as info:
        await submit(dispatcher)
    assert (info.value.code, info.value.error) == (503, "The bot is shutting down; please try again in a moment")


async def test_a_refusal_seen_twice_moves_and_sends_the_job_once(dispatcher, repository, backend, database):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    await add_account(repository, G, A2, max_jobs=1, user="2")
    await add_account(repository, G, A3, max_jobs=1, user="3")
    job = (await submit(dispatcher)).job
    overloaded = JobUpdate(overloaded=True, error_details="The queue is full")
    # The retry waits (10 s in production) before it moves the job and sends it again; the
    # duplicate arrives within that wait. With no wait at all, a copy read only after the job was
    # sent again would be a new refusal of the new submission, as far as anyone can tell.
    dispatcher.overload_retry_delay = 0.3
    # The same PixVerse refusal arrives as a create and as an edit, handled concurrently.
    await asyncio.gather(dispatcher.job_update(job.job_id, overloaded), dispatcher.job_update(job.job_id, overloaded))
    await dispatcher.wait_idle()
    moved = await dispatcher.get(job.job_id, G)
    assert moved.placement_attempts == 1
    assert len(backend.submitted) == 2  # the first try and one retry, not two
    assert backend.submitted[-1][1] == f"token-for-{moved.account_channel_id}"
    held = {a: await slots(database, a) for a in (A1, A2, A3)}
    assert sum(held.values()) == 1 and held[moved.account_channel_id] == 1


async def test_a_polled_job_answers_what_the_row_holds_now_even_within_one_clock_tick(dispatcher, repository,
                                                                                     backend, clock):
    """The polled GET keeps the answer made for an unchanged row; any change of the row, even one
    that leaves updated_at as it was (the clock here never moves), makes a new one."""
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    first = await dispatcher.public_job_by_id(job.job_id, G)
    again = await dispatcher.public_job_by_id(job.job_id, G)
    assert again == first and again is not first  # the same answer, a copy the caller may change
    again["status"] = "tampered"
    assert (await dispatcher.public_job_by_id(job.job_id, G))["status"] == first["status"]
    await dispatcher.jobs.record_progress(job.job_id, JobStatus.PROGRESS, now=clock.now, message_id="5001",
                                          progress=42, content="working")
    changed = await dispatcher.public_job_by_id(job.job_id, G)
    assert (changed["status"], changed["updated"], changed["messageId"]) == ("progress", first["updated"], "5001")
    assert changed == await dispatcher.public_job(await dispatcher.get(job.job_id, G))  # the other path agrees


def test_a_jobs_useapi_code_says_how_it_ended():
    from dataclasses import replace

    from bot.dispatch.models import Job, JobState

    job = Job("job:x", G, A1, "1", 1, MEMBER, ASKED_IN, Verb.CREATE, dict(BODY), None, JobStatus.PROGRESS,
              JobState.SUBMITTED, None, 0, 1, 1, 1.0, 1.0, submitted_at=1.0)
    ended = {status: replace(job, status=status, state=JobState.DONE) for status in
             (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.MODERATED, JobStatus.FAILED)}
    assert [job.to_public()["code"]] + [j.to_public()["code"] for j in ended.values()] == [200, 200, 200, 422, 500]
    assert replace(ended[JobStatus.FAILED], error="Timed out").to_public()["code"] == 408


async def test_progress_is_told_at_most_once_every_three_seconds_to_listeners_that_want_it(dispatcher, repository,
                                                                                         backend, listener, clock):
    class Progress:
        def __init__(self) -> None:
            self.seen: list[tuple[str, int | None]] = []

        async def job_changed(self, job) -> None:
            pass

        async def job_progressed(self, job) -> None:
            self.seen.append((job.status.value, job.progress))

    watcher = Progress()
    dispatcher.listeners.append(watcher)
    await add_account(repository, G, A1, max_jobs=2, user="1")
    job = (await submit(dispatcher)).job
    other = (await submit(dispatcher, body={"prompt": "other", "style": "Anime"})).job
    for each in (job, other):
        await dispatcher.job_update(each.job_id, JobUpdate(JobStatus.STARTED, message_id=f"m-{each.job_id}"))

    async def progress(each, percent: int) -> None:
        await dispatcher.job_update(each.job_id, JobUpdate(JobStatus.PROGRESS, message_id=f"m-{each.job_id}",
                                                           progress=percent))
        await dispatcher.wait_idle()

    for percent in (10, 20, 30):
        await progress(job, percent)
    assert watcher.seen == [("progress", 10)]  # the later steps fall within the 3 s
    await progress(other, 15)  # each job has its own 3 s
    clock.now += 2.9
    await progress(job, 40)
    clock.now += 0.2
    await progress(job, 50)
    assert watcher.seen == [("progress", 10), ("progress", 15), ("progress", 50)]
    # Listeners without job_progressed hear only of the start.
    assert listener.seen == [(job.job_id, "started"), (other.job_id, "started")]


async def test_a_429_says_when_a_slot_is_likely_free(dispatcher, repository, clock):
    await add_account(repository, G, A1, max_jobs=1, user="1")
    job = (await submit(dispatcher)).job
    await dispatcher.jobs.mark_submitted(job, clock.now, owner=dispatcher.owner)

    async def retry_after() -> int:
        with pytest.raises(ApiError) as info:
            await submit(dispatcher, body={"prompt": "next", "style": "Anime"})
        assert info.value.code == 429
        return info.value.retry_after

    clock.now += 10
    assert await retry_after() == 50  # the typical 60 s run, less the 10 s it has run
    clock.now += 48
    assert await retry_after() == 5  # overdue: not sooner than 5 s, never a retry every second
    dispatcher._run_times.extend([100.0, 120.0, 140.0])  # jobs completed here ran 2 minutes
    assert await retry_after() == 62


async def test_a_members_job_whose_end_is_not_shown_is_told_again_until_it_is(database, repository, backend, clock,
                                                                                listener, dispatcher):
    """A crash between a job's end and its message, a write Discord kept refusing, an announcement
    another process missed: the end is told again (after the live path's grace) until recorded as shown."""
    from bot.dispatch.dispatcher import Dispatcher
    from bot.dispatch.models import API_REQUESTER
    from bot.shards import shard_of

    await add_account(repository, G, A1, max_jobs=3, user="1")
    await dispatcher.start()
    shown, missed = (await submit(dispatcher)).job, (await submit(dispatcher)).job
    api = (await dispatcher.submit(guild_id=G, requester_id=API_REQUESTER, request_channel_id=API_REQUESTER,
                                   verb=Verb.CREATE, body=BODY)).job
    await dispatcher.wait_idle()
    for job in (shown, missed, api):
        await backend.complete(job.job_id)
    await dispatcher.wait_idle()
    await dispatcher.final_shown(shown.job_id)  # what the jobs cog records once the message shows it
    listener.seen.clear()

    await dispatcher.show_ends()
    await dispatcher.wait_idle()
    assert listener.seen == []  # within the grace: the live path's retries have their turn
    clock.now += dispatcher.show_grace + 1
    await dispatcher.show_ends()
    await dispatcher.wait_idle()
    assert listener.seen == [(missed.job_id, "completed")]  # not the shown one, not the HTTP API's

    # Only the process that follows the server tells it (it holds the member's message).
    elsewhere = Dispatcher(jobs_of(database), repository, backend, clock=clock, listeners=[Listener()],
                           shards=(2, frozenset({1 - shard_of(G, 2)})))
    await elsewhere.show_ends()
    await elsewhere.wait_idle()
    assert elsewhere.listeners[0].seen == []

    await dispatcher.final_shown(missed.job_id)
    listener.seen.clear()
    await dispatcher.show_ends()
    await dispatcher.wait_idle()
    assert listener.seen == []



async def test_members_ends_and_reply_url_ends_each_have_their_own_batch(database, repository, backend, clock,
                                                                        listener, dispatcher, monkeypatch, caplog):
    """A receiver down all day with many jobs cannot take the members' turn: each kind has its batch."""
    import bot.dispatch.dispatcher as dispatcher_module
    from bot.dispatch.models import API_REQUESTER

    monkeypatch.setattr(dispatcher_module, "SHOW_ENDS_BATCH", 1)
    await add_account(repository, G, A1, max_jobs=3, user="1")
    await dispatcher.start()
    member = (await submit(dispatcher)).job
    replies = [(await dispatcher.submit(guild_id=G, requester_id=API_REQUESTER, request_channel_id=API_REQUESTER,
                                        verb=Verb.CREATE, body=BODY, extra={"replyUrl": "https://example.com/hook"})).job
               for _ in range(2)]
    await dispatcher.wait_idle()
    for job in (member, *replies):  # the member's ends first: the replyUrl ones are the most recent
        clock.now += 1
        await backend.complete(job.job_id)
        await dispatcher.wait_idle()
    listener.seen.clear()
    clock.now += dispatcher.show_grace + 1
    caplog.set_level(logging.INFO, logger="bot.dispatch.dispatcher")
    await dispatcher.show_ends()
    await dispatcher.wait_idle()
    assert sorted(listener.seen) == sorted([(member.job_id, "completed"), (replies[1].job_id, "completed")])
    # Told again every minute while nobody takes them, but said once in the log, not every minute.
    for _ in range(3):
        await dispatcher.show_ends()
        await dispatcher.wait_idle()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
            and r.getMessage().startswith("Telling again")] == ["Telling again the end of 2 job(s) not told yet"]


async def test_a_final_state_its_reply_url_did_not_take_is_posted_again_until_taken(database, repository, backend,
                                                                                  clock, dispatcher):
    """A receiver down through the live path's tries (or a crash before the POST): Dispatcher.show_ends
    POSTs the HTTP API job's final state again, one try a round, until the receiver takes it; then never again."""
    from bot.dispatch.models import API_REQUESTER
    from bot.web.callbacks import ReplyPoster
    from tests.receiver import reply_receiver

    async def body(job):
        return await dispatcher.public_job(job, with_reply=True)

    async def posts(count: int) -> list[dict]:
        while len(receiver.bodies) < count:
            await asyncio.wait_for(receiver.queue.get(), timeout=10)
        await asyncio.sleep(0.05)  # the poster records what it was answered
        return [(b["jobid"], b["status"]) for b in receiver.bodies]

    async def to_tell() -> list[str]:
        return [job.job_id for job in await dispatcher.jobs.final_not_shown(ended_before=clock.now + 1, ended_after=0)]

    await add_account(repository, G, A1, max_jobs=2, user="1")
    async with reply_receiver(status=503) as receiver:
        poster = ReplyPoster(body, allow_private=True, backoff=0.01, told=dispatcher.final_shown)
        try:
            dispatcher.listeners.append(poster)
            await dispatcher.start()
            job = (await dispatcher.submit(guild_id=G, requester_id=API_REQUESTER, request_channel_id=API_REQUESTER,
                                           verb=Verb.CREATE, body=BODY, extra={"replyUrl": receiver.url})).job
            await dispatcher.wait_idle()
            await backend.complete(job.job_id)
            await dispatcher.wait_idle()
            # The final state, three times: all refused with a 503; still to tell.
            assert await posts(3) == [(job.job_id, "completed")] * 3
            assert await to_tell() == [job.job_id]

            clock.now += dispatcher.show_grace + 1
            await dispatcher.show_ends()
            await dispatcher.wait_idle()
            assert (await posts(4))[3:] == [(job.job_id, "completed")]  # one try this round, refused again
            assert await to_tell() == [job.job_id]

            receiver.status = 200
            await dispatcher.show_ends()
            await dispatcher.wait_idle()
            assert (await posts(5))[4:] == [(job.job_id, "completed")]
            assert await to_tell() == []  # taken: recorded as told
            await dispatcher.show_ends()
            await dispatcher.wait_idle()
            await asyncio.sleep(0.2)
            assert len(receiver.bodies) == 5
        finally:
            await poster.close()


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
async def test_pixverse_text_no_engine_stores_reads_as_a_replacement_character_and_the_job_still_ends(
        database, repository, bad):
    """PostgreSQL's text cannot hold a NUL, and no engine can encode a lone surrogate (a JSON
    ``\\ud800`` escape decodes to one): PixVerse text carrying either (its content echoes what was
    typed; embeds and buttons are PixVerse's own) is read with U+FFFD in its place. The job moves
    on, through the one-statement progress path too, ends and frees its slot on every engine."""
    from tests.dispatch_support import discord_backend_dispatcher

    pixverse_user, account_user = "950000000000000001", "700000000000000001"
    await add_account(repository, G, A1, max_jobs=1, user=account_user)
    backend, d = discord_backend_dispatcher(database, repository, application_id=pixverse_user, listener=Listener())

    async def submit_only(job, token):  # the user-token side is not under test here
        backend.channel_saved(job.account_channel_id)

    backend.submit = submit_only
    try:
        job_id = (await submit(d)).job.job_id

        def said(message_id: str, text: str, **more) -> dict:
            return {"id": message_id, "channel_id": A1, "guild_id": G, "author": {"id": pixverse_user, "bot": True},
                    "content": f"<@{account_user}> (prompt: a red fox style: Realistic aspect-ratio: 16:9) {text}",
                    "type": 20, "flags": 0, "attachments": [], "embeds": [], "components": [],
                    "timestamp": "2027-01-15T08:00:00+00:00", "interaction_metadata": {"user": {"id": account_user}},
                    **more}

        await backend.observe(said("1001", f"(Waiting to start){bad}"))
        await d.wait_idle()
        started = await d.get(job_id, G)
        assert started.status is JobStatus.STARTED
        assert started.content.endswith("(Waiting to start)\ufffd")
        # An edit of the attributed message: the one-statement path (record_message_progress).
        await backend.observe(said("1001", f"(37%) {bad}", edited_timestamp="2027-01-15T08:00:05+00:00"))
        await d.wait_idle()
        going = await d.get(job_id, G)
        assert (going.progress, going.content.endswith("(37%) \ufffd")) == (37, True)
        final = said(
            "1002", f"Author: <@700000000000000001>{bad}",
            timestamp=f"2027-01-15T08:01:00+00:00{bad}",
            attachments=[{"id": "1", "url": f"https://cdn.example/v{bad}.mp4", "filename": f"v{bad}.mp4", "size": 10,
                          "content_type": "video/mp4"}],
            embeds=[{"title": f"Done{bad}"}],
            components=[{"type": 1, "components": [{"type": 2, "style": 2, "label": f"U{bad}1",
                                                    "custom_id": f"u1{bad}"}]}],
            interaction_metadata=None)
        await backend.observe(final)
        await d.wait_idle()
        done = await d.get(job_id, G)
        assert done.status is JobStatus.COMPLETED and done.message_id == "1002"
        assert done.content.endswith("Author: <@700000000000000001>\ufffd")
        assert "timestamp" not in done.to_public()  # a timestamp carrying one is no timestamp
        assert [(a["url"], a["filename"]) for a in done.attachments] == [
            ("https://cdn.example/v\ufffd.mp4", "v\ufffd.mp4")]
        assert [(b["label"], b["custom_id"]) for b in done.buttons] == [("U\ufffd1", f"u1{bad}")]
        # Embeds and a button's id are kept as Discord sent them, in JSON text, whose ASCII escapes
        # every engine stores.
        assert done.embeds == [{"title": f"Done{bad}"}]
        assert await slots(database, A1) == 0
    finally:
        await d.close()


@pytest.mark.parametrize("off_by", [-600.0, 600.0])
async def test_a_process_whose_clock_is_off_keeps_its_jobs_and_times_them_by_the_databases_clock(
        database, repository, caplog, off_by):
    """Leases and timeouts compare a time one process wrote with another's clock, perhaps on
    another machine. A process whose clock is 10 minutes behind wrote leases the others read as
    expired (they took over its running jobs); one ahead wrote jobs the others never timed out.
    Both take the database's time: their jobs stay theirs, and their times are the database's."""
    import time

    from bot.dispatch.clock import SharedClock
    from bot.dispatch.dispatcher import Dispatcher

    def process(owner: str, clock: SharedClock, backend: ManualBackend) -> Dispatcher:
        return Dispatcher(jobs_of(database), repository, backend, clock=clock, clock_sync=clock.sync, owner=owner,
                          lease_interval=5, lease_ttl=15, job_timeout=900, rng=random.Random(3))

    caplog.set_level(logging.WARNING, logger="bot.dispatch.clock")
    await add_account(repository, G, A1, max_jobs=2, user="1")
    off, right = ManualBackend(), ManualBackend()
    skewed = process("elsewhere:ns:1:aaaa", SharedClock(database.clock, local=lambda: time.time() + off_by), off)
    other = process("here:ns:2:bbbb", SharedClock(database.clock), right)
    try:
        await skewed.start()
        job = (await submit(skewed)).job
        assert off.submitted == [(job.job_id, f"token-for-{A1}")]
        await other.start()  # takes over the jobs of processes whose lease expired
        await other.sweep()
        await other.wait_idle()
        stored = await jobs_of(database).get(job.job_id)
        assert (stored.owner, stored.status, right.resumed) == ("elsewhere:ns:1:aaaa", JobStatus.CREATED, [])
        assert abs(stored.submitted_at - time.time()) < 5
        assert [r.getMessage().split(". ")[0] for r in caplog.records if r.name == "bot.dispatch.clock"] == [
            "This machine's clock and the database server's are 600.0 s apart"
            f" (this machine's {'behind' if off_by < 0 else 'ahead'})"]
    finally:
        await skewed.close()
        await other.close()


async def test_a_process_is_told_of_another_that_follows_its_servers(database, repository, caplog):
    """Two processes given the same SHARD_IDS, or different SHARD_COUNTs, both follow some servers
    (and leave others to none): each sweep looks at the live processes' leases and warns once per
    process and problem; a process of an earlier version, which does not say, is left alone."""
    from bot.dispatch.dispatcher import Dispatcher

    def process(owner: str, shards) -> Dispatcher:
        return Dispatcher(jobs_of(database), repository, ManualBackend(), clock=Clock(), owner=owner, shards=shards,
                          lease_interval=5, lease_ttl=15)

    caplog.set_level(logging.INFO, logger="bot.dispatch.dispatcher")
    here = process("here:ns:1:aaaa", (2, frozenset({0})))
    processes = {name: process(f"{name}:ns:2:bbbb", shards) for name, shards in (
        ("twin", (2, frozenset({0}))), ("neighbour", (2, frozenset({1}))), ("recounted", (3, frozenset({2}))))}
    await jobs_of(database).heartbeat("older:ns:3:cccc", Clock().now)  # an earlier version: says nothing
    for other in processes.values():
        await other.sweep()
    caplog.clear()  # the others warned too: "recounted" of every one
    await here.sweep()
    await here.sweep()
    told = lambda: [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("Process")]
    assert sorted(told()) == [
        ("WARNING", "Process recounted:ns:2:bbbb runs with SHARD_COUNT=3 and this process with SHARD_COUNT=2: they"
                    " split the servers differently, so some servers are followed by two processes and some by"
                    " none. Give every process the same SHARD_COUNT"),
        ("WARNING", "Process twin:ns:2:bbbb follows shard 0 of 2 and this process shard 0 of 2: the servers of both"
                    " are followed twice. Run each shard in one process only (SHARD_COUNT and SHARD_IDS)"),
    ]
    caplog.clear()
    await processes["twin"].close()  # drops its lease
    await here.sweep()
    assert told() == [("INFO", "Process twin:ns:2:bbbb no longer follows servers of this process (shard 0 of 2)")]
    await here.close()
    for other in processes.values():
        await other.close()
