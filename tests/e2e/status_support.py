"""Reading a job's status message as the member sees it: the reply to their command, edited in
place (the fake keeps each message's current state in ``message_objects``)."""

from __future__ import annotations

import asyncio
import re

FINAL_WORDS = frozenset({"completed", "failed", "moderated", "cancelled"})
_MENTION = re.compile(r"^<@\d+> ")


def reply_of(result) -> dict:
    """The interaction's reply as Discord shows it now."""
    return result.message_objects[result.original_message_id]


def word_of(content: str) -> str:
    """The state word a status message starts with (after the member's mention, if any)."""
    return _MENTION.sub("", content, count=1).split(" ", 1)[0]


def buttons_of(message: dict) -> list[list[str]]:
    """The message's buttons, row by row, by label (or emoji)."""
    return [[c.get("label") or (c.get("emoji") or {}).get("name") for c in row["components"]]
            for row in message.get("components") or []]


def fields_of(message: dict) -> dict[str, str]:
    [embed] = message["embeds"]
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def settled(result, words=FINAL_WORDS, timeout: float = 15) -> dict:
    """The reply once it shows one of ``words`` (by default a final state)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = result.message_objects.get(result.original_message_id) or {}
        if word_of(message.get("content") or "") in words:
            return message
        assert asyncio.get_running_loop().time() < deadline, f"the reply never showed {sorted(words)}: {message}"
        await asyncio.sleep(0.01)


async def the_jobs_channel_message(fake, channel_id: int, job_id: str, *, timeout: float = 15) -> dict:
    """The bot's channel message for a job once it shows a final state, asserted to be the only one
    the bot posted for the job (edited to its end, never one per state)."""

    def ours(message: dict) -> bool:  # the short reply that tells the member of the end is not it
        return (message["author"]["id"] == str(fake.bot_user_id) and job_id in message["content"]
                and message.get("message_reference") is None)

    posted = await fake.wait_for_channel_message(
        channel_id, lambda m: ours(m) and word_of(m["content"]) in FINAL_WORDS, timeout=timeout)
    assert [m["id"] for m in fake.channel_messages[channel_id] if ours(m)] == [posted["id"]]
    return posted
