from __future__ import annotations

from pathlib import Path

import pytest

from gateway._internal.secret import Secret
from gateway.config import DEFAULT_FEDERATION_FILE, Network, Witness, load_federation
from gateway.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
[federation]
name = "t"

[[nodes]]
id = "national"
region = "000000"
port = 9001

[[nodes]]
id = "zhuji"
region = "330681"
parent = "national"
port = 9002
"""


def test_default_federation_matches_design() -> None:
    fed = load_federation(env={})
    assert [(n.id, n.region, n.parent, n.port) for n in fed.nodes] == [
        ("idp", None, None, 8400),
        ("national", "000000", None, 8401),
        ("zhejiang", "330000", "national", 8402),
        ("shaoxing", "330600", "zhejiang", 8403),
        ("zhuji", "330681", "shaoxing", 8404),
        ("shanghai", "310000", "national", 8405),
        ("anhui", "340000", "national", 8406),
        ("linquan", "341221", "anhui", 8407),
    ]
    assert [a.nodes for a in fed.agreements] == [("zhuji", "linquan")]
    client_ids = {c.id for c in fed.clients}
    assert {"zhuji-civil-affairs", "shanghai-public-security", "linquan-public-security",
            "anhui-human-resources"} <= client_ids  # fmt: skip
    assert fed.source == DEFAULT_FEDERATION_FILE


def test_limits_are_read(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, MINIMAL + "\n[limits]\nmax_batch = 7\n"), env={})
    assert fed.limits.max_batch == 7


def test_network_numbers_are_read_with_their_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "\n[network]\nretry_attempts = 5\nbreaker_open_seconds = 7\n"
    fed = load_federation(write(tmp_path, text), env={})
    assert fed.network == Network(retry_attempts=5, breaker_open_seconds=7.0)
    assert load_federation(write(tmp_path, MINIMAL), env={}).network == Network()


def test_the_default_federation_file_spells_out_every_network_default() -> None:
    fed = load_federation(DEFAULT_FEDERATION_FILE, env={})
    assert fed.network == Network()
    text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
    assert all(f"\n{name} = " in text for name in Network.__dataclass_fields__)


def test_witness_numbers_are_read_with_their_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "\n[witness]\nquorum = 2\ncheck_interval_seconds = 1\n"
    fed = load_federation(write(tmp_path, text), env={})
    assert fed.witness == Witness(quorum=2, check_interval_seconds=1.0)
    assert load_federation(write(tmp_path, MINIMAL), env={}).witness == Witness()
    default = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
    assert load_federation(DEFAULT_FEDERATION_FILE, env={}).witness == Witness()
    assert all(f"\n{name} = " in default for name in Witness.__dataclass_fields__)


def test_only_nationals_auditors_may_read_every_audit_log(tmp_path: Path) -> None:
    text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
    national = text.replace(
        'department = "national-ops"\n', 'department = "national-ops"\naudit_everywhere = true\n'
    )
    fed = load_federation(DEFAULT_FEDERATION_FILE, env={})
    assert fed.client("national-ops") is not None
    assert not any(c.audit_everywhere for c in fed.clients)  # off unless the file says so
    assert fed.client("nobody") is None
    wide = load_federation(write(tmp_path, national), env={})
    assert [c.id for c in wide.clients if c.audit_everywhere] == ["national-ops"]
    zhuji = text.replace(
        'department = "zhuji-ops"\n', 'department = "zhuji-ops"\naudit_everywhere = true\n'
    )
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, zhuji), env={})
    assert "audit_everywhere is for national's clients" in info.value.detail


def test_a_development_token_section_is_refused(tmp_path: Path) -> None:
    # There is no development bearer token any more: a file that still configures one fails
    # at start-up instead of silently running without it.
    path = write(tmp_path, MINIMAL + '\n[development]\nenabled = true\ntoken = "dev"\n')
    with pytest.raises(ConfigError) as info:
        load_federation(path, env={})
    assert "unknown section" in info.value.detail
    assert "development" in info.value.detail


def test_passphrase_comes_from_env_and_is_hidden(tmp_path: Path) -> None:
    fed = load_federation(write(tmp_path, MINIMAL), env={"TONGBAN_KEY_PASSPHRASE": "s3cret"})
    assert fed.key_passphrase == Secret("s3cret")
    assert "s3cret" not in repr(fed)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('[[nodes]]\nid = "xx"\nregion = "33068"\nport = 9003\n', "not a 6-digit"),
        ('[[nodes]]\nid = "xx"\nregion = "330682"\nport = 9002\n', "already used by 'zhuji'"),
        (
            '[[nodes]]\nid = "xx"\nregion = "330682"\nparent = "nowhere"\nport = 9003\n',
            "parent 'nowhere' is not a node",
        ),
        ('[[nodes]]\nid = "xx"\nregion = "330682"\nport = "9003"\n', "'port' must be a int"),
        ('[[nodes]]\nid = "Bad_Id"\nregion = "330682"\nport = 9003\n', "id must match"),
        ('[[agreements]]\nnodes = ["zhuji", "mars"]\n', "'mars' is not a node"),
        (
            '[[nodes]]\nid = "xx"\nregion = "330682"\nport = 9003\n'
            '  [[nodes.departments]]\n  id = "d"\n  name = "D"\n'
            '  credit_code = "11330681002521002T"\n',
            "check",
        ),
        ('[[citizens]]\nid = "330681199001010016"\nname = "x"\n', "check"),
        ("[bogus]\n", "unknown section"),
        ("[limits]\nmax_batch = 0\n", "must be positive"),
        ("[limits]\nmax_bach = 3\n", "unknown limits key"),
        ("[network]\nretry_attempts = 0\n", "retry_attempts must be positive"),
        ("[network]\nfetch_timeout_seconds = -1.5\n", "must be positive"),
        ("[network]\nretries = 3\n", "unknown network key 'retries'"),
        ('[network]\nbreaker_failures = "3"\n', "'breaker_failures' must be a int"),
        ("[limits]\nmax_header_bytes = 9000\n", "1 KiB above max_token_bytes"),
        ("[witness]\nquorum = 0\n", "quorum must be positive"),
        ("[witness]\nquorum = 1.5\n", "'quorum' must be a int"),
        ("[witness]\nwitnesses = 2\n", "unknown witness key 'witnesses'"),
    ],
)
def test_bad_files_fail_naming_the_problem(tmp_path: Path, snippet: str, message: str) -> None:
    path = write(tmp_path, MINIMAL + "\n" + snippet)
    with pytest.raises(ConfigError) as info:
        load_federation(path, env={})
    assert message in info.value.detail
    assert str(path) in info.value.detail


def test_bad_file_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[[nodes]]\nid = "xx"\nregion = "33068"\nport = 9003\n')
    with pytest.raises(ConfigError) as info:
        load_federation(path, env={})
    line = MINIMAL.count("\n") + 4  # the region line of the new node
    assert f"{path}:{line}:" in info.value.detail


def test_toml_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, "[federation\n"), env={})
    assert "line 1" in info.value.detail


def test_parent_cycle_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace('id = "national"\nregion = "000000"',
                           'id = "national"\nparent = "zhuji"\nregion = "000000"')  # fmt: skip
    with pytest.raises(ConfigError, match="cycle"):
        load_federation(write(tmp_path, text), env={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_federation(Path("/nonexistent/federation.toml"), env={})


def test_clock_skew_is_configurable_and_bounded(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "t"', 'name = "t"\nclock_skew_seconds = 30')
    assert load_federation(write(tmp_path, text), env={}).clock_skew_seconds == 30
    assert load_federation(write(tmp_path, MINIMAL), env={}).clock_skew_seconds == 60
    with pytest.raises(ConfigError, match=r"clock_skew_seconds must be 0\.\.300"):
        load_federation(
            write(tmp_path, MINIMAL.replace('name = "t"', 'name = "t"\nclock_skew_seconds = 301')),
            env={},
        )


def test_a_node_may_name_its_postgresql_database(tmp_path: Path) -> None:
    text = MINIMAL.replace('id = "zhuji"\n', 'id = "zhuji"\ndatabase = "postgresql://z@db/zhuji"\n')
    fed = load_federation(write(tmp_path, text), env={})
    database = fed.node("zhuji").database
    assert database is not None
    assert database.reveal() == "postgresql://z@db/zhuji"
    assert "db/zhuji" not in repr(fed.node("zhuji"))  # a secret: never in a repr or a log
    assert fed.node("national").database is None
    again = fed.with_database("national", "postgres://n@db/national")
    assert again.node("national").database == Secret("postgres://n@db/national")


def test_a_database_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace('id = "zhuji"\n', 'id = "zhuji"\ndatabase = "sqlite:///z.db"\n')
    with pytest.raises(ConfigError, match=r"federation.toml:\d+: node 'zhuji': database must"):
        load_federation(write(tmp_path, text), env={})
    fed = load_federation(write(tmp_path, MINIMAL), env={})
    with pytest.raises(ConfigError) as caught:
        fed.with_database("zhuji", "mysql://x")
    assert caught.value.code == "config.database"
