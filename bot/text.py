"""Text every storage engine keeps.

PostgreSQL's ``text`` and ``jsonb`` cannot hold a NUL (U+0000), and no engine can encode a
surrogate code point to UTF-8 (Python's JSON decoder turns an unpaired ``\\ud800`` escape into
one). Text from outside that the bot keeps with a job or an account (what PixVerse writes, what
Discord answers) is read through :func:`storable_text`: a write that failed on it would keep
the job from ending. What members type is refused instead (``catalogue.refuse_unstorable``).
"""

from __future__ import annotations

import re

#: What no engine stores: NUL, and surrogate code points.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: What UTF-8 cannot encode: surrogate code points.
SURROGATES = re.compile("[\ud800-\udfff]")


def utf8_encodable(text: str) -> bool:
    """Whether UTF-8 can carry ``text`` (no surrogate code point)."""
    return text.isascii() or SURROGATES.search(text) is None


def storable_text(text: str) -> str:
    """``text`` with each NUL and surrogate as U+FFFD, the replacement character."""
    return UNSTORABLE.sub("\ufffd", text)
