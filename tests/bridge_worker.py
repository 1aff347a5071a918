"""One process of the bridge's multi-process tests.

Run: python tests/bridge_worker.py REDIS_URL NAME BACKEND MODE [exclusive]

It shares the signal ``fanout`` through a bridge (in MODE, ``pubsub`` or
``stream``) and prints one JSON line
for each event: ``{"ready": <bridge id>}`` once connected, ``{"got": ...}``
each time its receiver runs (sender, arguments, origin), ``{"sent": ...}``
once a send it was told to make is published. It reads commands from
standard input, one a line: ``send TEXT`` (send ``fanout`` with this
process's name as sender and ``text=TEXT``), ``quit``.

With ``exclusive`` (stream mode), it also has the exclusive receiver
``mail`` of ``fanout``, which prints ``{"exclusive": [TEXT, "started"]}``
and ``{"exclusive": [TEXT, "done"]}``; with HANG=1 in its environment it
never finishes a send whose text is ``hang`` (the test then kills it).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

import asignals
from asignals.bridge import RedisBridge, origin

fanout = asignals.signal("fanout")


def say(**what: Any) -> None:
    print(json.dumps(what), flush=True)


async def main(url: str, name: str, mode: Any, exclusive: bool) -> None:
    bridge = RedisBridge(url, mode=mode)
    bridge.share(fanout)
    if exclusive:

        @bridge.exclusive(fanout, name="mail", idle_timeout=0.5)
        async def mail(sender: Any, text: str) -> None:
            say(exclusive=[text, "started"])
            if text == "hang" and os.environ.get("HANG"):
                await anyio.sleep_forever()
            say(exclusive=[text, "done"])

    @fanout.connect
    def receiver(sender: Any, **kwargs: Any) -> None:
        say(got={"sender": sender, "kwargs": kwargs, "origin": origin()})

    await serve(bridge, name)
    say(stats=bridge.stats)


async def serve(bridge: RedisBridge, name: str) -> None:
    """Run ``bridge``, saying it is ready, and do the commands read from
    standard input until ``quit``."""
    async with bridge:
        say(ready=bridge.id)
        stdin = anyio.wrap_file(sys.stdin)
        async for line in stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "send":
                await fanout.send_async(name, text=argument)
                await bridge.flush()
                say(sent=argument)
            elif command == "quit":
                break


if __name__ == "__main__":
    exclusive = sys.argv[5:] == ["exclusive"]
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[4], exclusive, backend=sys.argv[3])
