"""The aiohttp surface of a node: thin handlers over :mod:`gateway.services.node`."""
