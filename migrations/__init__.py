"""The SQL migrations, one folder per storage engine; shipped in the package as ``bot.migrations``."""
