"""Typed application keys: the state a node's app keeps (set in ``create_app`` and at start-up)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.server.node import NodeLinks
from gateway.services.node import NodeService

NODE = web.AppKey("node", NodeService)
"""The node's synchronous service (set when the app is created)."""
LINKS = web.AppKey("links", NodeLinks)
"""Everything that talks to other nodes (set at start-up by :func:`gateway.server.node.linked`)."""
OPENAPI = web.AppKey("openapi", dict[str, Any])
