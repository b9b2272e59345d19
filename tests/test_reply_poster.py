"""The replyUrl poster: a job's states go out in the order they were told, never a state after the final one;
the final state is recorded as told once the receiver took it, and posted again when told again until then."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from bot.dispatch.models import API_REQUESTER, Job, JobState, JobStatus, Verb
from bot.web.callbacks import ReplyPoster
from tests.receiver import reply_receiver


def api_job(url: str) -> Job:
    return Job("job:r", "1", "2", "3", 1, API_REQUESTER, API_REQUESTER, Verb.CREATE, {"prompt": "x", "replyUrl": url},
               None, JobStatus.STARTED, JobState.SUBMITTED, None, 0, 1, 1, 1.0, 1.0, submitted_at=1.0)


async def test_states_go_out_in_order_and_nothing_follows_the_final_one():
    async def body(job: Job) -> dict:
        # The started state's body is slow to make, the final one's fast: the order must hold anyway.
        await asyncio.sleep(0.3 if job.status is JobStatus.STARTED else 0)
        return {"status": job.status.value}

    async with reply_receiver() as receiver:
        poster = ReplyPoster(body, allow_private=True)
        started = api_job(receiver.url)
        ended = replace(started, status=JobStatus.CANCELLED, state=JobState.DONE)
        await asyncio.gather(poster.job_changed(started), poster.job_changed(ended))
        await poster.job_progressed(replace(started, status=JobStatus.PROGRESS, progress=40))  # raced the cancel
        await poster.close()
        assert [b["status"] for b in receiver.bodies] == ["started", "cancelled"]


def ended_job(url: str, job_id: str = "job:r") -> Job:
    return replace(api_job(url), job_id=job_id, status=JobStatus.COMPLETED, state=JobState.DONE)


async def status_body(job: Job) -> dict:
    return {"jobid": job.job_id, "status": job.status.value}


async def settled(poster: ReplyPoster) -> None:
    """Until the poster's POSTs under way are done (a test fails, not hangs, past 10 s)."""
    while poster._tasks:
        await asyncio.wait_for(asyncio.wait(set(poster._tasks)), timeout=10)


class Record:
    """The dispatcher's final_shown as the poster sees it: the jobs recorded as told, in order."""

    def __init__(self, fail_first: int = 0) -> None:
        self.told: list[str] = []
        self.fail_first = fail_first

    async def __call__(self, job_id: str) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise OSError("database is locked")
        self.told.append(job_id)


async def test_a_final_state_is_recorded_as_told_once_the_receiver_took_it():
    async with reply_receiver() as receiver:
        record = Record()
        poster = ReplyPoster(status_body, allow_private=True, told=record)
        await poster.job_changed(api_job(receiver.url))
        await poster.job_changed(ended_job(receiver.url))
        await poster.close()
        assert receiver.bodies == [{"jobid": "job:r", "status": "started"}, {"jobid": "job:r", "status": "completed"}]
        assert record.told == ["job:r"]  # the started state is not an end: nothing recorded for it


async def test_a_final_state_carrying_a_lone_surrogate_as_discord_sent_it_is_posted():
    """A job's embeds are kept as Discord sent them, a lone surrogate too (a JSON escape in the
    message): the body still goes out, as JSON escapes, and the end is recorded."""
    async def body(job: Job) -> dict:
        return {"jobid": job.job_id, "status": job.status.value, "embeds": [{"title": "Done\ud800", "url": "é"}]}

    async with reply_receiver() as receiver:
        record = Record()
        poster = ReplyPoster(body, allow_private=True, told=record)
        await poster.job_changed(ended_job(receiver.url))
        await poster.close()
        assert receiver.bodies == [{"jobid": "job:r", "status": "completed", "embeds": [{"title": "Done\ud800", "url": "é"}]}]
        assert record.told == ["job:r"]


async def test_a_final_state_the_receiver_did_not_take_is_posted_again_when_told_again(caplog):
    async with reply_receiver(status=503) as receiver:
        record = Record()
        poster = ReplyPoster(status_body, allow_private=True, told=record, backoff=0.01)
        await poster.job_changed(ended_job(receiver.url))
        await asyncio.wait_for(poster.close(grace=10), timeout=10)
        assert len(receiver.bodies) == 3 and record.told == []  # its three tries, nothing recorded: still to tell
        assert "replyUrl of job job:r failed 3 time(s) (last: HTTP 503); told again every minute for a day" in caplog.text

        # After a restart, Dispatcher.show_ends tells it to a new poster, which has not tried it yet: three tries.
        poster = ReplyPoster(status_body, allow_private=True, told=record, backoff=0.01)
        await poster.job_changed(ended_job(receiver.url))
        await poster.close()
        assert len(receiver.bodies) == 6 and record.told == []


async def test_a_retold_final_state_gets_one_try_and_is_recorded_once_taken(caplog):
    async with reply_receiver(status=503) as receiver:
        record = Record()
        poster = ReplyPoster(status_body, allow_private=True, told=record, backoff=0.01)
        await poster.job_changed(ended_job(receiver.url))
        await settled(poster)  # the live path's three tries
        caplog.clear()
        await poster.job_changed(ended_job(receiver.url))  # told again: one try, quietly
        await settled(poster)
        assert len(receiver.bodies) == 4 and record.told == []
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        receiver.status = 200
        await poster.job_changed(ended_job(receiver.url))
        await poster.close()
        assert len(receiver.bodies) == 5 and record.told == ["job:r"]


async def test_a_final_state_refused_for_good_or_never_postable_is_recorded_without_retries(caplog):
    async with reply_receiver(status=404) as receiver:
        record = Record()
        poster = ReplyPoster(status_body, told=record)  # private addresses refused, as by default
        await poster.job_changed(ended_job("http://127.0.0.1:9/hook", job_id="job:local"))
        await poster.job_changed(ended_job("ftp://example.com/hook", job_id="job:ftp"))
        trusting = ReplyPoster(status_body, allow_private=True, told=record)
        await trusting.job_changed(ended_job(receiver.url, job_id="job:404"))
        await poster.close()
        await trusting.close()
        assert len(receiver.bodies) == 1  # a 404 is an answer: not tried again
        assert record.told == ["job:local", "job:ftp", "job:404"]
        assert "replyUrl of job job:local points to a private or local address; not posted" in caplog.text
        assert "replyUrl of job job:404 answered 404" in caplog.text


async def test_a_posted_final_state_whose_record_failed_is_recorded_when_told_again_without_a_new_post(caplog):
    async with reply_receiver() as receiver:
        record = Record(fail_first=1)
        poster = ReplyPoster(status_body, allow_private=True, told=record)
        await poster.job_changed(ended_job(receiver.url))
        await settled(poster)
        assert record.told == [] and len(receiver.bodies) == 1
        assert "Could not record that job job:r's final state was posted: OSError: database is locked" in caplog.text
        await poster.job_changed(ended_job(receiver.url))  # Dispatcher.show_ends, a minute later
        await poster.close()
        assert record.told == ["job:r"] and len(receiver.bodies) == 1


async def test_a_final_state_whose_body_could_not_be_made_is_posted_when_told_again(caplog):
    async with reply_receiver() as receiver:
        record = Record()
        failures = [OSError("database is locked")]

        async def flaky_body(job: Job) -> dict:
            if failures:
                raise failures.pop()
            return await status_body(job)

        poster = ReplyPoster(flaky_body, allow_private=True, told=record)
        await poster.job_changed(ended_job(receiver.url))
        await settled(poster)
        assert receiver.bodies == [] and record.told == []
        assert ("replyUrl of job job:r not posted: OSError: database is locked; told again every minute for a day"
                in caplog.text)
        await poster.job_changed(ended_job(receiver.url))  # Dispatcher.show_ends, a minute later
        await poster.close()
        assert receiver.bodies == [{"jobid": "job:r", "status": "completed"}] and record.told == ["job:r"]


async def test_a_receiver_asking_to_be_tried_again_is_tried_again():
    for status in (408, 425, 429):
        async with reply_receiver(status=status) as receiver:
            record = Record()
            poster = ReplyPoster(status_body, allow_private=True, told=record, backoff=0.01)
            await poster.job_changed(ended_job(receiver.url))
            await poster.close(grace=10)
            assert (len(receiver.bodies), record.told) == (3, []), status
