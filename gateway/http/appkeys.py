"""Typed application keys: the state a node keeps, created in ``create_app``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from aiohttp import web

from gateway.federation.exchange import Exchange
from gateway.federation.keyrotation import KeyLifecycle
from gateway.services.authority import TrustAuthority
from gateway.services.catalog import CatalogService
from gateway.services.node import NodeService
from gateway.trust.sync import TrustSync

NODE = web.AppKey("node", NodeService)
EXECUTOR = web.AppKey("writer", ThreadPoolExecutor)
OPENAPI = web.AppKey("openapi", dict[str, Any])
SESSION = web.AppKey("session", aiohttp.ClientSession)
TRUST = web.AppKey("trust", TrustSync)
AUTHORITY = web.AppKey("authority", TrustAuthority)
CATALOG = web.AppKey("catalog", CatalogService)
EXCHANGE = web.AppKey("exchange", Exchange)
LIFECYCLE = web.AppKey("lifecycle", KeyLifecycle)
