"""A job's or an account's reason, shown once (bot/slash.py reason_lines)."""

from bot.slash import reason_lines


def test_details_that_repeat_the_error_add_only_what_is_new():
    assert reason_lines("Banned prompt", "Banned prompt\na forbidden thing") == ["Banned prompt", "a forbidden thing"]
    assert reason_lines("Banned prompt", "Banned prompt") == ["Banned prompt"]
    assert reason_lines("Timed out", "PixVerse did not finish the job within 900 seconds") == [
        "Timed out", "PixVerse did not finish the job within 900 seconds"]
    assert reason_lines(None, "only details") == ["only details"]
    assert reason_lines("only the error", None) == ["only the error"]
    assert reason_lines(None, None) == []
