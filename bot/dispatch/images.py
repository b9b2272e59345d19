"""Images given to ``animate`` and ``meme_face``: told apart by their bytes, never by their name.

A request brings an :class:`Image` (an HTTP file part, a Discord attachment downloaded); the
catalogue checks it (:func:`check`) and the store keeps its bytes with the job until the job
ends, so that a queued job, a job moved to another account or a job resumed after a restart can
still send it. The job's parameters keep only :meth:`Image.summary` (name, size, type).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from bot.accounts.validation import echo
from bot.errors import ApiError, bad_request

IMAGE_LIMIT = 10 * 1024 * 1024  # bytes: "larger than 10 MB" beyond this
FILENAME_LIMIT = 100

# The first bytes of each accepted format.
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_UNSAFE = re.compile(r"[^\w.\- ]+")


def media_type(data: bytes) -> str | None:
    """``image/png``, ``image/jpeg`` or ``image/webp`` from the bytes themselves; None otherwise."""
    if data.startswith(_PNG):
        return "image/png"
    if data.startswith(_JPEG):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def too_large(name: str, filename: str) -> ApiError:
    """The refusal of an image over IMAGE_LIMIT, whoever finds it (an HTTP part, an attachment's
    announced size, the catalogue's check)."""
    return bad_request(f"Param {name} ({echo(filename)}) is larger than {IMAGE_LIMIT // (1024 * 1024)} MB")


def safe_filename(name: str | None, data: bytes) -> str:
    """A name to show and to upload under: the base name only, no path or control characters,
    at most 100 characters; ``image.<ext>`` when nothing usable is left."""
    base = posixpath.basename((name or "").replace("\\", "/")).strip()
    base = _UNSAFE.sub("_", base).strip(" .")[-FILENAME_LIMIT:]
    if base:
        return base
    kind = media_type(data)
    return "image." + (kind.split("/")[1] if kind else "bin")


@dataclass(frozen=True)
class Image:
    """An image as a request gave it. ``repr`` never shows the bytes."""

    filename: str
    data: bytes = field(repr=False)

    @classmethod
    def given(cls, filename: str | None, data: bytes) -> Image:
        return cls(safe_filename(filename, data), bytes(data))

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def content_type(self) -> str | None:
        return media_type(self.data)

    def summary(self) -> dict[str, object]:
        """What the job's parameters keep of it (its bytes live beside the job in the store)."""
        return {"filename": self.filename, "size": self.size, "content_type": self.content_type}
