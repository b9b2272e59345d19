"""Messages the bot does not follow are dropped before discord.py builds anything of them.

With the message content intent the bot receives every message of every channel it can see, and
it follows only a few of them (PixVerse's in the account channels, and its own). discord.py turns
each MESSAGE_CREATE and MESSAGE_UPDATE into a ``Message`` (author, member, mentions, embeds,
components …) and schedules its ``on_message`` before any code of the bot can look at it, and no
public option drops a message sooner: intents choose kinds of events, not channels, and the raw
events come after the ``Message`` is built. Turning discord.py's message cache off
(``max_messages=None``) is public and is done by the bot; this module goes one step earlier.

It wraps two entries of discord.py's **private** parser table, ``ConnectionState.parsers`` (the dict
from gateway event names to ``parse_*`` methods that every shard's websocket looks events up in), so
that a payload the bot does not want is dropped before discord.py parses it, and every other one
goes on to discord.py's own parser untouched. That is all it relies on, checked when it is
installed:

* ``client._connection`` is the client's ``ConnectionState`` (discord/client.py, ``Client.__init__``);
* its ``parsers`` dict maps ``"MESSAGE_CREATE"`` and ``"MESSAGE_UPDATE"`` to the bound methods
  ``parse_message_create`` / ``parse_message_update``, built once in ``ConnectionState.__init__``
  (discord/state.py);
* each websocket takes *that* dict (``ws._discord_parsers = client._connection.parsers`` in
  ``DiscordWebSocket.from_client``, discord/gateway.py) and calls ``parsers[event](data)`` with the
  event's ``d`` (``DiscordWebSocket.received_message``), so an entry replaced in it is what every
  shard, present or reconnected later, calls.

When any of that is not so (another discord.py release), nothing is installed, one warning says
why, and every message takes discord.py's normal path, where the bot's listeners filter them as
before: slower, never wrong. ``tests/test_gateway_filter.py`` fails loudly if a release changes
what this relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EVENTS = {"MESSAGE_CREATE": "parse_message_create", "MESSAGE_UPDATE": "parse_message_update"}

Wanted = Callable[[dict[str, Any]], bool]


class MessageGate:
    """Drops the MESSAGE_CREATE / MESSAGE_UPDATE payloads ``wanted`` refuses, before discord.py parses them.

    ``wanted(data)`` gets the event's raw ``d`` and must be cheap and never await: it runs on the
    gateway's reading path for every message. An exception in it lets the message through.
    """

    def __init__(self, wanted: Wanted) -> None:
        self.wanted = wanted
        self.dropped = 0
        self.passed = 0
        self._parsers: dict[str, Any] | None = None
        self._originals: dict[str, Callable[[Any], None]] = {}

    @property
    def installed(self) -> bool:
        return self._parsers is not None

    def install(self, client: Any) -> bool:
        """Wraps the client's message parsers; False (with one warning) when discord.py is not as expected."""
        if self._parsers is not None:
            return True
        problem = parser_table_problem(client)
        if problem is not None:
            log.warning("Every message takes discord.py's full path (%s): the bot still works, more slowly", problem)
            return False
        parsers = client._connection.parsers
        for event in EVENTS:
            original = parsers[event]
            self._originals[event] = original
            parsers[event] = self._gate(original)
        self._parsers = parsers
        return True

    def uninstall(self) -> None:
        """Puts discord.py's own parsers back (only those this gate wrapped)."""
        parsers, self._parsers = self._parsers, None
        if parsers is None:
            return
        for event, original in self._originals.items():
            if getattr(parsers.get(event), "message_gate", None) is self:
                parsers[event] = original
        self._originals.clear()

    def _gate(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        wanted = self.wanted

        def gate(data: Any) -> None:
            try:
                keep = wanted(data)
            except Exception:
                log.exception("The message filter failed; the message goes through")
                keep = True
            if keep:
                self.passed += 1
                original(data)
            else:
                self.dropped += 1

        gate.message_gate = self  # type: ignore[attr-defined]  # uninstall() puts back only its own
        return gate


def parser_table_problem(client: Any) -> str | None:
    """None when the client's parser table is what :class:`MessageGate` relies on, else what differs."""
    state = getattr(client, "_connection", None)
    if state is None:
        return "the client has no _connection"
    parsers = getattr(state, "parsers", None)
    if not isinstance(parsers, dict):
        return "ConnectionState.parsers is not a dict"
    for event, method in EVENTS.items():
        parser = parsers.get(event)
        if parser is None:
            return f"ConnectionState.parsers has no {event}"
        if getattr(parser, "__self__", None) is not state or getattr(parser, "__name__", None) != method:
            return f"ConnectionState.parsers[{event!r}] is not the state's {method}"
    return None
