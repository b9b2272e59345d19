"""What a process follows, written with its lease, and why two processes must not follow the same servers."""

from __future__ import annotations

import pytest

from bot.shards import claim, clash, describe, read_claim, shard_of


def test_a_claim_reads_back_as_written():
    for shards in (None, (2, frozenset({0})), (16, frozenset({3, 1, 12}))):
        assert read_claim(claim(shards)) == shards
    assert claim((16, frozenset({3, 1, 12}))) == "16:1,3,12"
    assert claim(None) == "all"
    for bad in ("", "0:1", "2:", "2:1,,3", "ALL", "2:1 ", "x" * 500):
        with pytest.raises(ValueError):
            read_claim(bad)


def test_what_a_process_follows_in_words():
    assert describe(None) == "every server (SHARD_IDS unset)"
    assert describe((2, frozenset({1}))) == "shard 1 of 2"
    assert describe((4, frozenset({2, 0}))) == "shards 0,2 of 4"


def test_processes_clash_when_they_follow_the_same_servers_or_split_them_differently():
    assert clash((2, frozenset({0})), (2, frozenset({1}))) is None
    assert clash((4, frozenset({0, 1})), (4, frozenset({2, 3}))) is None
    assert clash((2, frozenset({0})), (2, frozenset({0}))) == (
        "follows shard 0 of 2 and this process shard 0 of 2: the servers of both are followed twice."
        " Run each shard in one process only (SHARD_COUNT and SHARD_IDS)")
    assert clash(None, (2, frozenset({1}))) == (
        "follows shard 1 of 2 and this process every server (SHARD_IDS unset): the servers of both are followed"
        " twice. Run each shard in one process only (SHARD_COUNT and SHARD_IDS)")
    assert clash((2, frozenset({1})), None) is not None and clash(None, None) is not None
    assert clash((2, frozenset({0})), (3, frozenset({1}))) == (
        "runs with SHARD_COUNT=3 and this process with SHARD_COUNT=2: they split the servers differently, so"
        " some servers are followed by two processes and some by none. Give every process the same SHARD_COUNT")


def test_shard_of_is_discords_rule():
    assert shard_of("175928847299117063", 1) == 0
    assert shard_of(5 << 22, 4) == 1
