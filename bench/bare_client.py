"""The bare client of bench/gateway_bench.py: a ``discord.Client`` with the bot's intents (an
``AutoShardedClient`` when ``BENCH_SHARDED`` is set), doing nothing
but connecting to the fake Discord named by ``BENCH_API`` and ``BENCH_GATEWAY`` with ``BENCH_TOKEN``; prints ``READY <servers>``.

A file of its own, so that the script Python compiles at each start is a few lines, as the bot's
``python -m bot`` is (its modules come compiled, as discord.py's do).
"""

import os
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import discord
import yarl

discord.http.Route.BASE = os.environ["BENCH_API"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["BENCH_GATEWAY"])
discord.VoiceClient.warn_nacl = False
intents = discord.Intents.none()
intents.guilds = True
intents.guild_messages = True
intents.message_content = True
# BENCH_SHARDED (the bench's --sharded): the shards GET /gateway/bot recommends, as a bot that size connects.
client = (discord.AutoShardedClient if os.environ.get("BENCH_SHARDED") else discord.Client)(intents=intents)


@client.event
async def on_ready() -> None:
    print(f"READY {len(client.guilds)}", flush=True)


client.run(os.environ["BENCH_TOKEN"], log_handler=None)
