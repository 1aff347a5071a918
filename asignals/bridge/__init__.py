"""Signals across processes and hosts: a bridge on Redis.

>>> from asignals.bridge import RedisBridge
>>> import asignals
>>> cache_cleared = asignals.signal("cache-cleared")
>>> bridge = RedisBridge("redis://127.0.0.1:6379/0")
>>> bridge.share(cache_cleared)

A send of ``cache_cleared`` in any process that shares it now runs the
receivers of every other process that shares it too, once, in the
background there. Start the bridge with ``asignals.install(app,
bridge=bridge)`` (the app's lifespan starts and stops it) or ``async with
bridge:``. Needs the ``redis`` extra (``pip install -e '.[redis]'`` in asignals'
checkout), which brings coredis.
"""

from __future__ import annotations

from .._exceptions import BridgeError, BridgeFullError
from ._bridge import RedisBridge, bridge_connected, bridge_disconnected, origin

__all__ = [
    "BridgeError",
    "BridgeFullError",
    "RedisBridge",
    "bridge_connected",
    "bridge_disconnected",
    "origin",
]
