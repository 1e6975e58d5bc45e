"""Routing: target nodes by region code, and routes over the hierarchy and agreements."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Agreement, Federation, load_federation
from gateway.errors import ConfigError, InputError, NotFoundError
from gateway.federation.routing import Route, Topology
from gateway.ids import NodeId, RegionCode

N = NodeId


@pytest.fixture(scope="module")
def default_federation() -> Federation:
    return load_federation(env={})


@pytest.fixture(scope="module")
def topology(default_federation: Federation) -> Topology:
    return Topology.from_federation(default_federation)


# --- building ---------------------------------------------------------------------------------


def test_the_identity_provider_is_not_part_of_the_topology(topology: Topology) -> None:
    assert set(topology.nodes) == {
        "national",
        "zhejiang",
        "shaoxing",
        "zhuji",
        "shanghai",
        "anhui",
        "linquan",
    }
    with pytest.raises(NotFoundError) as info:
        topology.route(N("idp"), N("zhuji"))
    assert info.value.code == "routing.unknown_node"


def test_parents_regions_and_adjacency_come_from_the_file(topology: Topology) -> None:
    assert topology.parent(N("zhuji")) == "shaoxing"
    assert topology.parent(N("national")) is None
    assert topology.region(N("linquan")) == "341221"
    assert topology.linked(N("linquan"), N("zhuji"))
    assert topology.adjacent(N("zhuji"), N("shaoxing"))
    assert topology.adjacent(N("zhuji"), N("linquan"))
    assert not topology.adjacent(N("zhuji"), N("zhejiang"))
    assert not topology.adjacent(N("zhejiang"), N("shanghai"))


def test_two_nodes_with_one_region_code_fail_at_start_up(
    default_federation: Federation,
) -> None:
    nodes = tuple(
        replace(n, region=RegionCode("330600")) if n.id == "zhuji" else n
        for n in default_federation.nodes
    )
    with pytest.raises(ConfigError, match="330600 is already served by 'shaoxing'"):
        Topology.from_federation(default_federation.with_overrides(nodes=nodes))


def test_an_agreement_with_the_identity_provider_fails_at_start_up(
    default_federation: Federation,
) -> None:
    federation = default_federation.with_overrides(
        agreements=(Agreement(nodes=(N("zhuji"), N("idp"))),)
    )
    with pytest.raises(ConfigError, match="'idp' is not a region node"):
        Topology.from_federation(federation)


def test_a_region_node_under_the_identity_provider_fails_at_start_up(
    default_federation: Federation,
) -> None:
    nodes = tuple(
        replace(n, parent=N("idp")) if n.id == "shanghai" else n for n in default_federation.nodes
    )
    with pytest.raises(ConfigError, match="parent 'idp' is not a region node"):
        Topology.from_federation(default_federation.with_overrides(nodes=nodes))


@pytest.mark.parametrize(
    ("regions", "parents", "agreements", "message"),
    [
        ({N("a"): RegionCode("33")}, {N("a"): None}, (), "not a 6-digit code"),
        ({N("a"): RegionCode("330000")}, {}, (), "needs a parent entry"),
        (
            {N("a"): RegionCode("330000"), N("b"): RegionCode("330600")},
            {N("a"): N("b"), N("b"): N("a")},
            (),
            "cycle",
        ),
        ({N("a"): RegionCode("330000")}, {N("a"): None}, ((N("a"), N("a")),), "two different"),
    ],
)
def test_a_bad_topology_fails_at_start_up(
    regions: dict[NodeId, RegionCode],
    parents: dict[NodeId, NodeId | None],
    agreements: tuple[tuple[NodeId, NodeId], ...],
    message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        Topology(regions, parents, agreements)


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jurisdiction", "node"),
    [
        ("341221", "linquan"),  # county: exact
        ("341200", "anhui"),  # a city with no node of its own: its province
        ("341225", "anhui"),  # a sibling county of linquan: the province, not linquan
        ("330602", "shaoxing"),  # a district of shaoxing: the city
        ("330681", "zhuji"),
        ("330600", "shaoxing"),
        ("330000", "zhejiang"),
        ("310104", "shanghai"),  # a district of shanghai: the province-level city
        ("110105", "national"),  # Beijing has no node: the national hub
        ("000000", "national"),
    ],
)
def test_the_target_is_the_longest_region_code_match(
    topology: Topology, jurisdiction: str, node: str
) -> None:
    assert topology.target_for(jurisdiction) == node


@pytest.mark.parametrize(
    "jurisdiction", ["", "34122", "3412210", "34122a", "３４１２２１", " 341221"]
)
def test_a_malformed_jurisdiction_is_bad_input(topology: Topology, jurisdiction: str) -> None:
    with pytest.raises(InputError) as info:
        topology.target_for(jurisdiction)
    assert info.value.code == "routing.bad_region"
    assert info.value.status == 400


def test_no_node_and_no_national_hub_is_not_found() -> None:
    topology = Topology({N("zhejiang"): RegionCode("330000")}, {N("zhejiang"): None})
    assert topology.target_for("330681") == "zhejiang"
    with pytest.raises(NotFoundError) as info:
        topology.target_for("341221")
    assert info.value.code == "routing.no_node"


# --- routes -----------------------------------------------------------------------------------


def test_zhuji_to_shanghai_goes_up_to_national_and_down(topology: Topology) -> None:
    expected = (N("zhuji"), N("shaoxing"), N("zhejiang"), N("national"), N("shanghai"))
    assert topology.route(N("zhuji"), N("shanghai")) == expected
    assert topology.routes(N("zhuji"), N("shanghai")) == [expected]
    assert topology.route(N("shanghai"), N("zhuji")) == tuple(reversed(expected))


def test_zhuji_to_linquan_is_direct_with_the_hierarchy_as_fallback(topology: Topology) -> None:
    hierarchy = (
        N("zhuji"),
        N("shaoxing"),
        N("zhejiang"),
        N("national"),
        N("anhui"),
        N("linquan"),
    )
    assert topology.route(N("zhuji"), N("linquan")) == (N("zhuji"), N("linquan"))
    assert topology.routes(N("zhuji"), N("linquan")) == [(N("zhuji"), N("linquan")), hierarchy]
    assert topology.hierarchical_route(N("zhuji"), N("linquan")) == hierarchy
    assert topology.route(N("linquan"), N("zhuji")) == (N("linquan"), N("zhuji"))


def test_routes_within_one_branch_stop_at_the_common_ancestor(topology: Topology) -> None:
    assert topology.route(N("zhuji"), N("zhejiang")) == (N("zhuji"), N("shaoxing"), N("zhejiang"))
    assert topology.route(N("national"), N("linquan")) == (N("national"), N("anhui"), N("linquan"))
    assert topology.route(N("zhuji"), N("zhuji")) == (N("zhuji"),)
    assert topology.routes(N("zhuji"), N("zhuji")) == [(N("zhuji"),)]


def test_an_agreement_along_a_parent_edge_is_listed_once() -> None:
    topology = Topology(
        {N("p"): RegionCode("330000"), N("c"): RegionCode("330600")},
        {N("p"): None, N("c"): N("p")},
        [(N("c"), N("p"))],
    )
    assert topology.routes(N("c"), N("p")) == [(N("c"), N("p"))]


def test_separate_trees_route_only_over_an_agreement() -> None:
    regions = {
        N("a"): RegionCode("330000"),
        N("b"): RegionCode("340000"),
        N("c"): RegionCode("310000"),
    }
    parents: dict[NodeId, NodeId | None] = {N("a"): None, N("b"): None, N("c"): None}
    topology = Topology(regions, parents, [(N("a"), N("b"))])
    assert topology.routes(N("a"), N("b")) == [(N("a"), N("b"))]
    with pytest.raises(NotFoundError) as info:
        topology.hierarchical_route(N("a"), N("b"))
    assert info.value.code == "routing.no_route"
    with pytest.raises(NotFoundError) as info:
        topology.routes(N("a"), N("c"))
    assert info.value.code == "routing.no_route"


def test_an_unknown_node_is_not_found(topology: Topology) -> None:
    for call in (
        lambda: topology.route(N("zhuji"), N("beijing")),
        lambda: topology.hierarchical_route(N("beijing"), N("zhuji")),
        lambda: topology.parent(N("beijing")),
        lambda: topology.adjacent(N("zhuji"), N("beijing")),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        assert info.value.code == "routing.unknown_node"


# --- properties -------------------------------------------------------------------------------


def _check_route(topology: Topology, route: Route, src: NodeId, dst: NodeId) -> None:
    assert route[0] == src
    assert route[-1] == dst
    assert len(set(route)) == len(route), f"route {route} repeats a node"
    agreement_edges = 0
    for a, b in itertools.pairwise(route):
        if topology.parent(a) == b or topology.parent(b) == a:
            continue
        assert topology.linked(a, b), f"{a}→{b} is neither a parent edge nor an agreement"
        agreement_edges += 1
    if agreement_edges:
        assert route == (src, dst), f"an agreement is only used as the whole route: {route}"


def _root(topology: Topology, node: NodeId) -> NodeId:
    parent = topology.parent(node)
    return node if parent is None else _root(topology, parent)


@st.composite
def forests(draw: st.DrawFn) -> Topology:
    size = draw(st.integers(min_value=1, max_value=12))
    names = [N(f"n{i}") for i in range(size)]
    parents: dict[NodeId, NodeId | None] = {}
    for i, name in enumerate(names):
        parent_index = draw(st.none() | st.integers(min_value=0, max_value=i - 1)) if i else None
        parents[name] = None if parent_index is None else names[parent_index]
    regions = {name: RegionCode(f"{100000 + i:06d}") for i, name in enumerate(names)}
    pairs = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=4))
    return Topology(regions, parents, [(a, b) for a, b in pairs if a != b])


@given(st.data())
def test_every_route_on_the_default_federation_is_a_path(data: st.DataObject) -> None:
    topology = Topology.from_federation(load_federation(env={}))
    src = data.draw(st.sampled_from(topology.nodes))
    dst = data.draw(st.sampled_from(topology.nodes))
    routes = topology.routes(src, dst)
    assert routes[0] == topology.route(src, dst)
    assert len(set(routes)) == len(routes)
    for route in routes:
        _check_route(topology, route, src, dst)
    assert topology.hierarchical_route(src, dst) in routes


@given(forests(), st.data())
def test_every_route_in_any_forest_is_a_path(topology: Topology, data: st.DataObject) -> None:
    src = data.draw(st.sampled_from(topology.nodes))
    dst = data.draw(st.sampled_from(topology.nodes))
    if not topology.linked(src, dst) and _root(topology, src) != _root(topology, dst):
        with pytest.raises(NotFoundError) as info:
            topology.routes(src, dst)
        assert info.value.code == "routing.no_route"
        return
    routes = topology.routes(src, dst)
    assert len(set(routes)) == len(routes)
    for route in routes:
        _check_route(topology, route, src, dst)
    if topology.linked(src, dst):
        assert routes[0] == (src, dst)
