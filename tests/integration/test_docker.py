"""docker/: the image and the compose file agree with the federation file and the CLI.

There is no Docker engine here, so these checks are static: they read ``compose.yaml``, the
``Dockerfile`` and ``docker/federation.toml`` the way Docker and ``tongban`` would, and fail
when one of them drifts from the others.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

import gateway
from gateway.certificates.schemas import default_schema_dir
from gateway.cli.main import _parser
from gateway.config import Federation, NodeConfig, load_federation
from gateway.crypto.keystore import FEDERATION_DIR

pytestmark = pytest.mark.slow  # real processes or a whole federation

REPO = Path(gateway.__file__).resolve().parents[1]
DOCKER = REPO / "docker"
STATE = PurePosixPath("/var/lib/tongban")
PASSPHRASE = "TONGBAN_KEY_PASSPHRASE"
DB_PASSWORD = "TONGBAN_DB_PASSWORD"
REPLICAS = {"zhuji": ("zhuji-1", "zhuji-2")}
"""Nodes run as replicas over PostgreSQL: the node's service is a proxy over these."""
DATABASE = "postgres"
"""The replicated nodes' PostgreSQL service."""


def node_of(name: str) -> str:
    """The node a ``tongban`` service serves (a replica serves its node)."""
    return next((node for node, names in REPLICAS.items() if name in names), name)


def tongban_services(services: dict[str, Any]) -> dict[str, Any]:
    """The services that run ``tongban`` (every node's, or its replicas'), by name."""
    return {
        name: service
        for name, service in services.items()
        if name != DATABASE and name not in REPLICAS
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


@pytest.fixture(scope="module")
def containers() -> Federation:
    return load_federation(DOCKER / "federation.toml", env={})


@pytest.fixture(scope="module")
def default() -> Federation:
    return load_federation(env={})


# -- the federation file of the containers -----------------------------------------------------


def test_the_containers_run_the_default_federation(
    containers: Federation, default: Federation
) -> None:
    """Same nodes, regions, parents, ports, departments, agreements, clients and citizens."""
    assert [replace(node, url=None) for node in containers.nodes] == list(default.nodes)
    for field in ("name", "audience", "seal_alg", "key_validity_days", "limits"):
        assert getattr(containers, field) == getattr(default, field), field
    assert containers.agreements == default.agreements
    assert containers.clients == default.clients
    assert containers.citizens == default.citizens


def test_only_addresses_and_directories_differ(containers: Federation, default: Federation) -> None:
    assert all(node.url is None for node in default.nodes)
    assert containers.host == "0.0.0.0"
    assert PurePosixPath(containers.data_dir).is_relative_to(STATE)
    assert PurePosixPath(containers.keys_dir).is_relative_to(STATE)
    same = replace(
        containers,
        nodes=default.nodes,
        host=default.host,
        data_dir=default.data_dir,
        keys_dir=default.keys_dir,
    )
    assert same == default


@pytest.mark.parametrize("node", load_federation(DOCKER / "federation.toml", env={}).nodes)
def test_every_node_is_reached_by_its_service_name(
    node: NodeConfig, containers: Federation
) -> None:
    assert node.url == f"http://{node.id}:{node.port}"
    assert containers.url(node.id) == node.url


# -- compose.yaml --------------------------------------------------------------------------------


def test_one_service_per_node(services: dict[str, Any], containers: Federation) -> None:
    """One service per node, named after it; a replicated node's replicas beside it, and
    the database they share."""
    expected: list[str] = [node.id for node in containers.nodes]
    for node, replicas in REPLICAS.items():
        at = expected.index(node) + 1
        expected[at:at] = [*replicas, DATABASE]
    assert list(services) == expected


def test_zhujis_replicas_share_only_the_database_and_the_keys(services: dict[str, Any]) -> None:
    replicas = [services[name] for name in REPLICAS["zhuji"]]
    databases = set()
    for name, service in zip(REPLICAS["zhuji"], replicas, strict=True):
        args = _parser().parse_args(service["command"])
        assert args.database.startswith("postgresql://"), name
        assert "@" + DATABASE + "/" in args.database, name
        assert ":" not in args.database.split("//", 1)[1].split("@", 1)[0], "no password"
        databases.add(args.database)
        assert service["environment"]["PGPASSWORD"].startswith("${" + DB_PASSWORD + ":?")
        assert service["depends_on"][DATABASE] == {"condition": "service_healthy"}, name
    assert len(databases) == 1
    shared = ("zhuji-keys:", "federation-secrets:")
    own = [{v for v in s["volumes"] if not v.startswith(shared)} for s in replicas]
    assert own[0].isdisjoint(own[1])
    assert all(f"zhuji-keys:{STATE / 'keys'}" in s["volumes"] for s in replicas)
    # the second waits for the first, which creates the keys and the tables
    assert services["zhuji-2"]["depends_on"]["zhuji-1"] == {"condition": "service_healthy"}
    database = services[DATABASE]
    assert database["environment"]["POSTGRES_PASSWORD"].startswith("${" + DB_PASSWORD + ":?")


def test_the_proxy_spreads_a_replicated_node_over_its_replicas(
    compose: dict[str, Any], services: dict[str, Any], containers: Federation
) -> None:
    proxy = services["zhuji"]
    (config,) = proxy["configs"]
    assert config == {"source": "zhuji-proxy", "target": "/etc/nginx/conf.d/default.conf"}
    assert (DOCKER / compose["configs"]["zhuji-proxy"]["file"]).resolve() == (
        DOCKER / "zhuji-proxy.conf"
    )
    text = (DOCKER / "zhuji-proxy.conf").read_text(encoding="utf-8")
    port = containers.node("zhuji").port
    assert f"listen {port};" in text
    for replica in REPLICAS["zhuji"]:
        assert f"server {replica}:{port}" in text
        assert proxy["depends_on"][replica] == {"condition": "service_healthy"}
    assert "proxy_pass http://zhuji_replicas;" in text


def test_each_service_publishes_its_node_port_on_loopback(
    services: dict[str, Any], containers: Federation
) -> None:
    for node in containers.nodes:
        (port,) = services[node.id]["ports"]
        assert port["target"] == node.port, node.id
        assert int(port["published"]) == node.port, node.id
        assert port["host_ip"] == "127.0.0.1", node.id


def test_each_command_is_the_cli_serving_that_node(
    compose: dict[str, Any], services: dict[str, Any], containers: Federation
) -> None:
    (config,) = [c for c in services["idp"]["configs"] if c["source"] == "federation"]
    assert (DOCKER / compose["configs"]["federation"]["file"]).resolve() == (
        DOCKER / "federation.toml"
    )
    for name, service in tongban_services(services).items():
        args = _parser().parse_args(service["command"])
        assert args.command == "serve", name
        assert args.node == node_of(name)
        assert args.host == "0.0.0.0", name
        assert args.port is None, f"{name}: the port comes from the federation file"
        assert args.federation == Path(config["target"]), name
        assert service["configs"] == [config], name
        assert PurePosixPath(args.data_dir) == PurePosixPath(containers.data_dir), name
        assert PurePosixPath(args.keys_dir) == PurePosixPath(containers.keys_dir), name


def test_each_health_check_probes_its_node_port(
    services: dict[str, Any], containers: Federation
) -> None:
    for name, service in tongban_services(services).items():
        node = containers.node(node_of(name))
        assert service["environment"]["PORT"] == str(node.port), node.id
        check = service["healthcheck"]
        # no `test` and not disabled: the image's HEALTHCHECK (GET /healthz on $PORT) runs
        assert "test" not in check, node.id
        assert not check.get("disable", False), node.id


def test_the_idp_then_national_start_before_the_others(services: dict[str, Any]) -> None:
    assert "depends_on" not in services["idp"]
    healthy = {"condition": "service_healthy"}
    assert services["national"]["depends_on"] == {"idp": healthy}
    for name, service in tongban_services(services).items():
        if name not in ("idp", "national"):
            assert {k: service["depends_on"][k] for k in ("idp", "national")} == {
                "idp": healthy,
                "national": healthy,
            }, name


def test_state_is_one_volume_per_node_and_one_shared(
    compose: dict[str, Any], services: dict[str, Any], containers: Federation
) -> None:
    shared = f"federation-secrets:{PurePosixPath(containers.keys_dir) / FEDERATION_DIR}"
    used: set[str] = set()
    for name, service in tongban_services(services).items():
        if node_of(name) != name:  # a replica: its node's keys are shared, its data is not
            keys = f"{node_of(name)}-keys:{STATE / 'keys'}"
            assert service["volumes"] == [f"{name}-state:{STATE}", keys, shared], name
        else:
            assert service["volumes"] == [f"{name}-state:{STATE}", shared], name
        used.update(volume.split(":")[0] for volume in service["volumes"])
    used.update(v.split(":")[0] for v in services[DATABASE]["volumes"])
    assert set(compose["volumes"]) == used


def test_the_passphrase_comes_from_outside_the_file(services: dict[str, Any]) -> None:
    for name, service in tongban_services(services).items():
        value = service["environment"][PASSPHRASE]
        assert value.startswith("${" + PASSPHRASE + ":?"), name
        assert value.endswith("}"), name


def test_the_image_is_built_from_the_repository(services: dict[str, Any]) -> None:
    for name, service in tongban_services(services).items():
        build = service["build"]
        assert (DOCKER / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DOCKER / "Dockerfile", name


# -- the Dockerfile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.arguments)
        assert isinstance(value, list), f"{self.keyword} must use the exec (JSON) form"
        return [str(v) for v in value]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((DOCKER / "Dockerfile").read_text(encoding="utf-8"))


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def test_the_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM x\n\nRUN a \\\n # inside\n  b\nUSER 1\n")
    assert parsed == [
        Instruction("FROM", "x"),
        Instruction("RUN", "a  b"),
        Instruction("USER", "1"),
    ]


def test_the_image_is_python_311_slim(dockerfile: list[Instruction]) -> None:
    assert [i.arguments for i in only(dockerfile, "FROM")] == ["python:3.11-slim"]


def test_the_entrypoint_is_tongban(dockerfile: list[Instruction]) -> None:
    (entrypoint,) = only(dockerfile, "ENTRYPOINT")
    assert entrypoint.exec_form() == ["tongban"]
    (cmd,) = only(dockerfile, "CMD")
    args = _parser().parse_args(cmd.exec_form())
    assert (args.command, args.host) == ("up", "0.0.0.0")


def test_it_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    users = only(dockerfile, "USER")
    assert users, "no USER: the container would run as root"
    user, _, group = users[-1].arguments.partition(":")
    assert user not in ("root", "0")
    assert group not in ("root", "0")
    last_user = max(i for i, instruction in enumerate(dockerfile) if instruction.keyword == "USER")
    assert only(dockerfile[last_user:], "RUN") == [], "nothing runs as root after USER"


def copies(dockerfile: list[Instruction]) -> dict[str, PurePosixPath]:
    """Each COPY source and where it lands, relative WORKDIRs resolved."""
    workdir = PurePosixPath("/")
    landed: dict[str, PurePosixPath] = {}
    for instruction in dockerfile:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.arguments
        elif instruction.keyword == "COPY":
            *sources, destination = shlex.split(instruction.arguments)
            assert not any(s.startswith("--") for s in sources), "COPY flags are not expected"
            target = workdir / destination
            for source in sources:
                is_dir = destination.endswith("/") and len(sources) > 1
                landed[source.rstrip("/")] = target / source if is_dir else target
    return landed


def test_it_copies_what_the_package_needs(dockerfile: list[Instruction]) -> None:
    landed = copies(dockerfile)
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for needed in ("pyproject.toml", project["readme"], "gateway", "schemas"):
        assert needed in landed, needed
    for source in landed:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    # gateway/certificates/schemas.py looks for <package>/../schemas: the image keeps that
    # layout ...
    assert default_schema_dir() == Path(gateway.__file__).resolve().parents[1] / "schemas"
    assert landed["schemas"] == landed["gateway"].parent / "schemas"
    # ... and installs the package in place (editable), so imports resolve to that copy
    installs = [i.arguments for i in only(dockerfile, "RUN") if "pip install" in i.arguments]
    assert len(installs) == 1
    assert "pip install -e ." in installs[0]


def test_the_health_check_gets_healthz_on_port(dockerfile: list[Instruction]) -> None:
    (check,) = only(dockerfile, "HEALTHCHECK")
    options, _, command = check.arguments.partition("CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2]
    assert "os.environ['PORT']" in argv[2]
    assert "/healthz" in argv[2]
    assert "--timeout=" in options


def test_keys_and_data_live_on_the_volume(
    dockerfile: list[Instruction], containers: Federation
) -> None:
    (volume,) = only(dockerfile, "VOLUME")
    assert volume.exec_form() == [str(STATE)]
    for directory in (containers.data_dir, containers.keys_dir):
        assert PurePosixPath(directory).is_relative_to(STATE)
    (cmd,) = only(dockerfile, "CMD")
    args = _parser().parse_args(cmd.exec_form())
    assert PurePosixPath(args.data_dir).is_relative_to(STATE)
    assert PurePosixPath(args.keys_dir).is_relative_to(STATE)


def test_the_passphrase_is_never_baked_into_the_image(dockerfile: list[Instruction]) -> None:
    for instruction in dockerfile:
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            assert PASSPHRASE not in instruction.arguments, instruction
