"""Routing decisions: which node holds a jurisdiction, and which hops reach it.

The federation is a tree of region nodes (each with a parent, ``national`` at the root) plus
point-to-point agreements (点对点) that link two nodes directly. DESIGN.md "Routing and
failures":

- the **target** of a lookup is the node whose region code is the longest match for the
  certificate's jurisdiction: county (all 6 digits), city (``xxxx00``, 4 digits), province
  (``xx0000``, 2 digits), and ``national`` (``000000``) as the fallback for anything;
- a **route** uses the agreement when one links the two ends directly, otherwise it goes up
  the parent chain to the lowest common ancestor and down. The hierarchical route is the
  fallback when a point-to-point link is down.

Everything here is plain synchronous Python over frozen data, built once at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from gateway.config import Federation
from gateway.errors import ConfigError, InputError, NotFoundError
from gateway.identifiers import REGION_CODE
from gateway.ids import NodeId, RegionCode

Route = tuple[NodeId, ...]
"""The nodes a request passes through, both ends included."""

NATIONAL_REGION: Final = RegionCode("000000")


class Topology:
    """The region nodes, their parents and agreements; answers targets and routes.

    Only region nodes take part: the identity provider is never a target nor a hop.
    """

    __slots__ = ("_by_region", "_links", "_parents", "_regions")

    def __init__(
        self,
        regions: Mapping[NodeId, RegionCode],
        parents: Mapping[NodeId, NodeId | None],
        agreements: Iterable[tuple[NodeId, NodeId]] = (),
    ) -> None:
        """Build and check a topology. Raises :class:`ConfigError` naming the problem."""
        by_region: dict[RegionCode, NodeId] = {}
        for node, region in regions.items():
            if not REGION_CODE.fullmatch(region):
                raise ConfigError(f"node {node!r}: region {region!r} is not a 6-digit code")
            if region in by_region:
                raise ConfigError(
                    f"node {node!r}: region {region} is already served by {by_region[region]!r}"
                )
            by_region[region] = node
        if set(parents) != set(regions):
            raise ConfigError("every region node needs a parent entry (None for a root)")
        for node, parent in parents.items():
            if parent is not None and parent not in regions:
                raise ConfigError(f"node {node!r}: parent {parent!r} is not a region node")
        links: set[frozenset[NodeId]] = set()
        for a, b in agreements:
            for end in (a, b):
                if end not in regions:
                    raise ConfigError(f"agreement {a!r} ↔ {b!r}: {end!r} is not a region node")
            if a == b:
                raise ConfigError(f"agreement {a!r} ↔ {b!r} must link two different nodes")
            links.add(frozenset((a, b)))
        self._regions: Mapping[NodeId, RegionCode] = MappingProxyType(dict(regions))
        self._parents: Mapping[NodeId, NodeId | None] = MappingProxyType(dict(parents))
        self._by_region: Mapping[RegionCode, NodeId] = MappingProxyType(by_region)
        self._links: frozenset[frozenset[NodeId]] = frozenset(links)
        for node in self._regions:
            self._ancestry(node)  # no cycles

    @classmethod
    def from_federation(cls, federation: Federation) -> Topology:
        """The topology of a loaded federation file (its region nodes and agreements)."""
        region_nodes = [n for n in federation.nodes if n.kind == "region" and n.region]
        return cls(
            regions={n.id: RegionCode(n.region) for n in region_nodes if n.region},
            parents={n.id: n.parent for n in region_nodes},
            agreements=(agreement.nodes for agreement in federation.agreements),
        )

    # -- the graph -------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[NodeId, ...]:
        return tuple(self._regions)

    def region(self, node: NodeId) -> RegionCode:
        self._require(node)
        return self._regions[node]

    def parent(self, node: NodeId) -> NodeId | None:
        self._require(node)
        return self._parents[node]

    def linked(self, a: NodeId, b: NodeId) -> bool:
        """True when a point-to-point agreement links ``a`` and ``b`` directly."""
        return frozenset((a, b)) in self._links

    def adjacent(self, a: NodeId, b: NodeId) -> bool:
        """True when ``a`` and ``b`` may talk directly: parent and child, or an agreement."""
        self._require(a)
        self._require(b)
        return self._parents[a] == b or self._parents[b] == a or self.linked(a, b)

    # -- targets ---------------------------------------------------------------------------

    def target_for(self, jurisdiction: str) -> NodeId:
        """The node with the longest region-code match for ``jurisdiction``.

        Raises :class:`InputError` ``routing.bad_region`` for anything but six ASCII digits,
        :class:`NotFoundError` ``routing.no_node`` when no node (not even ``national``) matches.
        """
        if not isinstance(jurisdiction, str) or not REGION_CODE.fullmatch(jurisdiction):
            raise InputError(
                "a jurisdiction must be a 6-digit GB/T 2260 region code", code="routing.bad_region"
            )
        candidates = (
            jurisdiction,  # county: all six digits
            jurisdiction[:4] + "00",  # city: the first four
            jurisdiction[:2] + "0000",  # province: the first two
            NATIONAL_REGION,  # the national hub answers for anything
        )
        for code in candidates:
            node = self._by_region.get(RegionCode(code))
            if node is not None:
                return node
        raise NotFoundError(f"no node serves region {jurisdiction}", code="routing.no_node")

    # -- routes ----------------------------------------------------------------------------

    def route(self, src: NodeId, dst: NodeId) -> Route:
        """The preferred route: the direct link when there is one, else the hierarchy."""
        return self.routes(src, dst)[0]

    def routes(self, src: NodeId, dst: NodeId) -> list[Route]:
        """Every route to try, in order: the direct link first, then the hierarchy.

        Raises :class:`NotFoundError` ``routing.no_route`` when the two nodes are neither
        linked nor share an ancestor.
        """
        self._require(src)
        self._require(dst)
        if src == dst:
            return [(src,)]
        found: list[Route] = []
        if self.linked(src, dst):
            found.append((src, dst))
        hierarchical = self._hierarchical(src, dst)
        if hierarchical is not None and hierarchical not in found:
            found.append(hierarchical)
        if not found:
            raise self._no_route(src, dst)
        return found

    def hierarchical_route(self, src: NodeId, dst: NodeId) -> Route:
        """Up the parent chain to the lowest common ancestor and down; agreements ignored."""
        self._require(src)
        self._require(dst)
        route = self._hierarchical(src, dst)
        if route is None:
            raise self._no_route(src, dst)
        return route

    def _hierarchical(self, src: NodeId, dst: NodeId) -> Route | None:
        up = self._ancestry(src)
        down = self._ancestry(dst)
        common = set(down)
        for i, node in enumerate(up):
            if node in common:
                j = down.index(node)
                return (*up[: i + 1], *reversed(down[:j]))
        return None

    def _ancestry(self, node: NodeId) -> list[NodeId]:
        """``node``, its parent, its grandparent… up to a root."""
        chain = [node]
        parent = self._parents[node]
        while parent is not None:
            if parent in chain:
                raise ConfigError(f"node {node!r}: the parent chain has a cycle")
            chain.append(parent)
            parent = self._parents[parent]
        return chain

    def _require(self, node: NodeId) -> None:
        if node not in self._regions:
            raise NotFoundError(f"{node!r} is not a region node", code="routing.unknown_node")

    @staticmethod
    def _no_route(src: NodeId, dst: NodeId) -> NotFoundError:
        return NotFoundError(f"no route from {src} to {dst}", code="routing.no_route")
