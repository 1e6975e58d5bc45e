"""Cases (办件) across regions: 受办分离 · 代收代办 and 全程网办.

The domain core: the working-day calendar, the lifecycle, the case record, the materials and
their credibility levels, and the sealed documents (the window's receipt, every transition's
event). Synchronous and free of HTTP and SQL; the store is :mod:`gateway.storage.cases`, the
service :mod:`gateway.services.cases`, the peer traffic :mod:`gateway.federation.cases`.
"""
