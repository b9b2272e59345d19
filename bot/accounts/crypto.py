"""Account tokens at rest: Fernet ciphertext plus a keyed hash for equality lookups."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.errors import NOT_A_FERNET_KEY, StartupError

log = logging.getLogger(__name__)

# A known plaintext kept encrypted in the database: at startup it proves that the key in
# use is the one the stored tokens were encrypted with, before any token is needed.
_KEY_CHECK_PLAINTEXT = b"pixverse-bot key check v1"
KEY_CHECK_META = "token_key_check"


class TokenCipher:
    def __init__(self, key: str | bytes) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        try:
            self._fernet = Fernet(raw_key)
        except (ValueError, TypeError) as exc:
            raise StartupError(f"TOKEN_ENCRYPTION_KEY {NOT_A_FERNET_KEY}", lasting=True) from exc
        # A separate key for the hash, derived so that one setting is all an admin keeps.
        self._hmac_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"pixverse-bot token hmac"
        ).derive(base64.urlsafe_b64decode(raw_key))

    def encrypt(self, token: str) -> bytes:
        return self._fernet.encrypt(token.encode("utf-8"))

    def decrypt(self, ciphertext: bytes) -> str:
        return self._fernet.decrypt(ciphertext).decode("utf-8")

    def fingerprint(self, token: str) -> str:
        return hmac.new(self._hmac_key, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def key_check(self) -> str:
        return self._fernet.encrypt(_KEY_CHECK_PLAINTEXT).decode("ascii")

    def verify_key_check(self, stored: str) -> bool:
        try:
            return self._fernet.decrypt(stored.encode("ascii")) == _KEY_CHECK_PLAINTEXT
        except (InvalidToken, ValueError):
            return False


def load_or_create_key(configured: str | None, key_file: Path, *, may_create: bool = True) -> str:
    """The key in use: the configured one, else the key file, else a new key written there once.

    A key file that other users can read stops the bot, as ssh refuses such a private key.
    ``may_create`` is False when the database already holds tokens: a new key could never
    decrypt them, so the bot stops instead of leaving a useless key file behind.
    """
    if configured:
        return configured
    if key_file.exists():
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & 0o077:
            raise StartupError(
                f"Token key file {key_file} is readable by other users (mode {mode:04o}); "
                f"run: chmod 600 {key_file}", lasting=True
            )
        try:
            key = key_file.read_text("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:  # a folder, another user's file, not a key's text
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a key's text"
            raise StartupError(f"Cannot read token key file {key_file}: {reason[0].lower() + reason[1:]}; restore"
                               " it or set TOKEN_ENCRYPTION_KEY", lasting=True) from None
        if not key:
            raise StartupError(f"Token key file {key_file} is empty; restore it or set TOKEN_ENCRYPTION_KEY",
                               lasting=True)
        return key
    if not may_create:
        raise StartupError(
            f"The database holds tokens but their key is not here: set TOKEN_ENCRYPTION_KEY to the key they "
            f"were saved with, or restore {key_file}", lasting=True
        )
    if not key_file.parent.exists():
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key().decode("ascii")
    # O_EXCL: two processes starting at once must not each write a different key.
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_key(None, key_file)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    log.warning(
        "TOKEN_ENCRYPTION_KEY is not set: generated a token key in %s (mode 0600). "
        "Back it up with the database; without it the stored tokens cannot be decrypted.",
        key_file,
    )
    return key


# Shapes of Discord tokens: base64 user id . timestamp . hmac, and legacy mfa tokens.
TOKEN_SHAPE = re.compile(r"\b(?:[\w-]{20,30}\.[\w-]{6,7}\.[\w-]{25,}|mfa\.[\w-]{20,})")


def mask_token_shapes(text: str) -> str:
    """``text`` with every token-shaped part masked as account replies show a token."""
    return TOKEN_SHAPE.sub(lambda m: mask_token(m.group(0)[-4:]), text)


def mask_token(token_last4: str) -> str:
    """What a reply shows of a token: never more than its last 4 characters."""
    return f"…{token_last4}" if token_last4 else "…"
