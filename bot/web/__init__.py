"""The HTTP API with useapi.net's PixVerse v1 paths, on the same core as the slash commands."""
