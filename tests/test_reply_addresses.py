"""replyUrl's host is judged as the HTTP client connects to it: no spelling of a local address gets through."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.addresses import client_host, host_verdict
from bot.dispatch.models import API_REQUESTER, Job, JobState, JobStatus, Verb
from bot.dispatch.validation import validate_reply
from bot.errors import ApiError
from bot.web.callbacks import PublicOnlyResolver, ReplyPoster

# Each of these reached a listener on 127.0.0.1 (or would reach the host's own network).
LOOPBACK_SPELLINGS = [
    "１２７.０.０.１",  # fullwidth digits
    "127。0。0。1",  # ideographic full stops
    "①②⑦.⓪.⓪.①",  # circled digits
    "127．0．0．1",  # fullwidth full stops
    "𝟏𝟐𝟕.𝟎.𝟎.𝟏",  # mathematical bold digits
    "2130706433",  # one decimal number (inet_aton)
    "0x7f.1",  # hex and short forms
    "0x7f000001",
    "017700000001",  # octal
    "127.1",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]",  # NAT64 embedding 127.0.0.1
    "[64:ff9b::a9fe:a9fe]",  # NAT64 embedding the metadata address
    "[64:ff9b:1::1]",  # local-use NAT64
    "[::127.0.0.1]",  # IPv4-compatible
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[fe80::1]",
    "[fc00::1]",
    "[::]",
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "[ff02::1]",
    "100.64.0.1",  # carrier-grade NAT
    "１６９.２５４.１６９.２５４",  # the cloud metadata address, fullwidth
    "169.254.169.254",
    "192.0.0.192",  # Oracle Cloud's metadata address (is_global says global on 3.11)
    "192.0.0.8",
    "[fec0::1]",  # deprecated site-local
    "[3fff::1]",  # documentation
    "198.18.0.1",  # benchmarking
    "LOCALHOST.",
    "ｌｏｃａｌｈｏｓｔ",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_a_local_address_is_refused_at_submission(host):
    url = f"http://{host}:8080/hook"
    with pytest.raises(ApiError) as info:
        validate_reply({"replyUrl": url})
    assert (info.value.code, info.value.error) == (400, f"Param replyUrl ({url}) points to a private or local address")


@pytest.mark.parametrize("host", ["example.com", "8.8.8.8", "[2606:4700:4700::1111]", "[64:ff9b::808:808]", "bücher.de"])
def test_public_hosts_and_names_pass_submission(host):
    url = f"https://{host}/hook"
    assert validate_reply({"replyUrl": url}) == {"replyUrl": url}


def test_the_host_judged_is_the_normalised_idna_one():
    assert client_host("http://１２７.０.０.１:9/") == "127.0.0.1"
    assert client_host("http://Bücher.DE/") == "xn--bcher-kva.de"
    assert host_verdict("xn--bcher-kva.de") is None  # a name: the resolver judges it at connect time
    assert host_verdict("127.0.0.1") is False


def _finished_api_job(url: str) -> Job:
    return Job(
        job_id="job-1", guild_id="1" * 18, account_channel_id=None, account_user_id=None, max_jobs=None,
        requester_id=API_REQUESTER, request_channel_id=API_REQUESTER, verb=Verb.CREATE,
        params={"prompt": "p", "style": "Anime", "replyUrl": url}, parent_job_id=None,
        status=JobStatus.COMPLETED, state=JobState.DONE, owner=None, placement_attempts=0, version=1,
        seq=1, created_at=0.0, updated_at=0.0,
    )


@contextlib.asynccontextmanager
async def hook_listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A replyUrl receiver on 127.0.0.1: its port, and the Host of every POST it got."""
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.host)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


async def _public_job(job: Job) -> dict:
    return {"jobid": job.job_id}


async def test_no_spelling_of_loopback_reaches_a_listener_on_127_0_0_1():
    """The poster itself, given stored jobs that slipped past submission (an older bot, a
    hand-edited row): not one request reaches the listener, names and literals alike."""
    async with hook_listener() as (port, hits):
        poster = ReplyPoster(_public_job, attempts=1, timeout=2.0, backoff=0)
        for host in LOOPBACK_SPELLINGS:
            await poster.job_changed(_finished_api_job(f"http://{host}:{port}/hook"))
        await poster.close()
        # A control: with private addresses allowed, the same poster does reach the listener,
        # so the silence above is the check's doing, not a broken poster.
        allowing = ReplyPoster(_public_job, attempts=1, timeout=2.0, backoff=0, allow_private=True)
        await allowing.job_changed(_finished_api_job(f"http://１２７.０.０.１:{port}/hook"))
        await allowing.close()
    assert hits == [f"127.0.0.1:{port}"]


async def test_the_poster_connects_through_the_checking_resolver(monkeypatch):
    """A public-looking name that resolves to loopback (DNS rebinding, a hostile record) reaches
    no listener: the poster's connector uses PublicOnlyResolver. Control: the same poster with
    that resolver's check disabled does reach it, so the silence is the resolver's doing."""
    from aiohttp.resolver import ThreadedResolver

    import bot.web.callbacks as callbacks

    class Rebinding(ThreadedResolver):
        async def resolve(self, host, port=0, family=0):
            return await super().resolve("127.0.0.1", port, family)

    monkeypatch.setattr(callbacks, "DefaultResolver", Rebinding)
    async with hook_listener() as (port, hits):
        url = f"http://hooks.example.com:{port}/hook"
        poster = ReplyPoster(_public_job, attempts=1, timeout=2.0, backoff=0)
        await poster.job_changed(_finished_api_job(url))
        await poster.close()
        assert hits == []
        monkeypatch.setattr(callbacks, "is_forbidden_ip", lambda ip: False)
        control = ReplyPoster(_public_job, attempts=1, timeout=2.0, backoff=0)
        await control.job_changed(_finished_api_job(url))
        await control.close()
        assert hits == [f"hooks.example.com:{port}"]


@pytest.mark.parametrize("name", ["localhost", "2130706433", "0x7f.1", "127.1"])
async def test_the_connect_time_resolver_refuses_numeric_spellings_and_local_names(name):
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="resolves only to private or local addresses"):
            await resolver.resolve(name, 80)
    finally:
        await resolver.close()
