"""The token key against the database, whatever its engine: a wrong or lost key is a clear
error at startup, not a silent failure the first time a stored token is needed."""

from __future__ import annotations

from bot.accounts.crypto import KEY_CHECK_META, TokenCipher
from bot.store import Database


async def holds_tokens(db: Database) -> bool:
    """True when any account token is stored (encrypted with some key)."""
    return await db.any_token_ciphertext() is not None


async def forget_key_check(db: Database) -> None:
    """For a key just generated for a database with no tokens: the old key's check protects nothing."""
    await db.delete_meta(KEY_CHECK_META)


async def verify_cipher(db: Database, cipher: TokenCipher) -> bool:
    """True when the key in use is the database's key; records it on a new database."""
    stored = await db.get_meta(KEY_CHECK_META)
    if stored is None:
        ciphertext = await db.any_token_ciphertext()
        if ciphertext is not None:
            try:
                cipher.decrypt(ciphertext)
            except Exception:
                return False
        await db.set_meta(KEY_CHECK_META, cipher.key_check())
        return True
    return cipher.verify_key_check(stored)
