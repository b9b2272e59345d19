"""A refusal as a member reads it (bot/tree.py format_error): the code, the text, the details, and
for a 429 when to try again (the HTTP API's Retry-After, in words)."""

from bot.errors import ApiError
from bot.store import busy
from bot.tree import format_error


def test_a_busy_server_says_when_to_try_again():
    error = busy("All PixVerse accounts are busy", ["job:a", "job:b"])
    assert format_error(error) == "429 · All PixVerse accounts are busy\n2 executing: job:a, job:b"
    error.retry_after = 45
    assert format_error(error) == (
        "429 · All PixVerse accounts are busy\n2 executing: job:a, job:b\nTry again in about 45 s")
    error.retry_after = 200
    assert format_error(error).endswith("\nTry again in about 3 min")
    assert format_error(ApiError(404, "Unable to locate job job:x")) == "404 · Unable to locate job job:x"
