"""Typed application keys: the state a node keeps, created in ``create_app``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from aiohttp import web

from gateway.node import NodeService

NODE = web.AppKey("node", NodeService)
EXECUTOR = web.AppKey("writer", ThreadPoolExecutor)
OPENAPI = web.AppKey("openapi", dict[str, Any])
SESSION = web.AppKey("session", aiohttp.ClientSession)
