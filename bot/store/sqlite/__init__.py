"""The embedded default: SQLite through aiosqlite, one file beside the bot."""
