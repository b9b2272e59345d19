"""How jobs reach PixVerse: one small interface, chosen by PIXVERSE_BACKEND."""
