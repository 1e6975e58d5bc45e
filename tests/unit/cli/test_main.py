"""The ``tongban`` command line, run in-process (and once as ``python -m gateway``)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest
from conftest import household_request

import gateway
from gateway._internal.secret import Secret
from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.cases.case import Applicant, Case, Channel, Party
from gateway.cases.lifecycle import CaseState
from gateway.certificates.matters import Delivery
from gateway.certificates.schemas import SchemaSet
from gateway.cli.main import main
from gateway.clock import SystemClock, from_rfc3339
from gateway.config import DEFAULT_FEDERATION_FILE, load_federation
from gateway.crypto.jwks import StaticKeyResolver
from gateway.crypto.keystore import KeyStore
from gateway.crypto.reports import SEAL_CHECKS
from gateway.crypto.seals import verify_seal
from gateway.ids import DepartmentId, NodeId
from gateway.server.node import open_node_service
from gateway.sso.auth import Principal, Scope
from gateway.storage.cases import CaseWrite, PostgresCaseStore

CERTIFICATE_CHECKS = [*SEAL_CHECKS, "schema", "identifier", "validity", "status"]
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
DAY = 86_400
PUBLIC_SECURITY = Principal(
    subject="zhuji-public-security",
    client_id="zhuji-public-security",
    scopes=frozenset(s.value for s in Scope),
    department=DepartmentId("zhuji-public-security"),
    node=NodeId("zhuji"),
)
"""Zhuji's public-security bureau, which issues household registers."""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def tongban(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> TongBan:
    return TongBan(tmp_path, capsys)


class TongBan:
    """``tongban --data-dir … --keys-dir … ARGS`` in this process, output captured."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = root / "var"
        self.keys_dir = root / "keys"
        self._capsys = capsys

    def __call__(self, *argv: str, federation: Path | None = None) -> Result:
        prefix = ["--federation", str(federation)] if federation else []
        dirs = ["--data-dir", str(self.data_dir), "--keys-dir", str(self.keys_dir)]
        self._capsys.readouterr()
        code = main([*prefix, *dirs, *argv])
        out, err = self._capsys.readouterr()
        return Result(code, out, err)


@dataclass(frozen=True)
class Sealed:
    seal: Path
    tampered: Path
    jwks: Path


@pytest.fixture
def sealed(tmp_path: Path, schemas: SchemaSet) -> Sealed:
    """A genuine seal from a node on the system clock (as `tongban verify` uses), its JWKS."""
    federation = load_federation(env={}).with_overrides(
        data_dir=tmp_path / "node-var", keys_dir=tmp_path / "node-keys"
    )
    service = open_node_service(federation, "zhuji", clock=SystemClock(), schemas=schemas)
    try:
        token = service.issue(PUBLIC_SECURITY, household_request()).certificate.seal
        jwks = service.jwks()
    finally:
        service.close()
    header, payload, signature = token.split(".")
    document = orjson.loads(b64url_decode(payload))
    document["holder"]["name"] = "李四"
    forged = f"{header}.{b64url_encode(orjson.dumps(document))}.{signature}"
    files = Sealed(tmp_path / "cert.jws", tmp_path / "forged.jws", tmp_path / "jwks.json")
    files.seal.write_text(token + "\n", encoding="ascii")
    files.tampered.write_text(forged, encoding="ascii")
    files.jwks.write_bytes(orjson.dumps(jwks))
    return files


def federation_file(tmp_path: Path, **replacements: str) -> Path:
    text = DEFAULT_FEDERATION_FILE.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "federation.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- seed and export -------------------------------------------------------------------------


def test_seed_then_export_writes_one_verifiable_seal_a_line(
    tongban: TongBan, tmp_path: Path
) -> None:
    seeded = tongban("seed", "--node", "zhuji", "--count", "50", "--seed", "1")
    assert seeded.code == 0
    assert "seeded 50 certificates into node zhuji" in seeded.err

    output = tmp_path / "zhuji.jws"
    exported = tongban("export", "--node", "zhuji", "-o", str(output))
    assert exported.code == 0
    assert "exported 50 sealed certificates" in exported.err

    lines = output.read_text(encoding="ascii").splitlines()
    assert len(lines) == 50
    assert len(set(lines)) == 50
    store = KeyStore.open(tongban.keys_dir, NodeId("zhuji"), clock=SystemClock())
    keys = StaticKeyResolver.from_jwks(store.jwks())  # the published JWKS, nothing private
    for line in lines:
        assert COMPACT_JWS.fullmatch(line)
        verified = verify_seal(line, keys, now=time.time())
        assert verified.node == "zhuji"
        assert verified.payload["iss"] == "zhuji"


def test_export_to_stdout(tongban: TongBan) -> None:
    assert tongban("seed", "--node", "zhuji", "--count", "3", "--seed", "2").code == 0
    exported = tongban("export", "--node", "zhuji")
    assert exported.code == 0
    lines = exported.out.splitlines()
    assert len(lines) == 3
    assert all(COMPACT_JWS.fullmatch(line) for line in lines)


def test_export_to_an_unwritable_place_fails_with_a_message(
    tongban: TongBan, tmp_path: Path
) -> None:
    result = tongban("export", "--node", "zhuji", "-o", str(tmp_path / "no-such-dir" / "x.jws"))
    assert result.code == 2
    assert result.err.startswith("tongban: cannot write the export")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["seed", "--node", "zhuji", "--count", "0"], "--count must be positive"),
        (["seed", "--node", "nowhere", "--count", "1"], "unknown node 'nowhere'"),
        (["seed", "--node", "idp", "--count", "1"], "is not a regional node"),
        (["seed", "--node", "national", "--count", "1"], "no department that issues"),
        (["export", "--node", "nowhere"], "unknown node 'nowhere'"),
        (["keys", "list", "--node", "nowhere"], "unknown node 'nowhere'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    tongban: TongBan, argv: list[str], message: str
) -> None:
    result = tongban(*argv)
    assert result.code == 2
    assert result.err.startswith("tongban: ")
    assert message in result.err
    assert result.out == ""


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "usage: tongban" in capsys.readouterr().err


# --- keys ------------------------------------------------------------------------------------


def test_keys_list_shows_state_kid_alg_and_times(tongban: TongBan) -> None:
    result = tongban("keys", "list", "--node", "zhuji", "--offline")
    assert result.code == 0
    header, rule, *rows = result.out.splitlines()
    assert header.split() == ["state", "kid", "alg", "created", "activates", "expires"]
    assert set(rule.replace(" ", "")) == {"-"}
    [record] = KeyStore.open(tongban.keys_dir, NodeId("zhuji"), clock=SystemClock()).records()
    [row] = [row.split() for row in rows]
    assert row[:3] == ["active", record.kid, "EdDSA"]
    created, activates, expires = (from_rfc3339(cell) for cell in row[3:])
    assert created == activates == int(record.created)
    assert expires - activates == 365 * DAY


def test_keys_follow_the_federation_files_algorithm_and_validity(
    tongban: TongBan, tmp_path: Path
) -> None:
    custom = federation_file(
        tmp_path,
        **{
            'seal_alg = "EdDSA"': 'seal_alg = "ES256"',
            "key_validity_days = 365": "key_validity_days = 30",
        },
    )
    listed = tongban("keys", "list", "--node", "zhuji", "--offline", federation=custom)
    assert listed.code == 0
    [row] = [line.split() for line in listed.out.splitlines()[2:]]
    assert row[2] == "ES256"
    assert from_rfc3339(row[5]) - from_rfc3339(row[4]) == 30 * DAY

    # ...and the node signs with that same key
    assert tongban("seed", "--node", "zhuji", "--count", "1", federation=custom).code == 0
    exported = tongban("export", "--node", "zhuji", federation=custom)
    header = orjson.loads(b64url_decode(exported.out.split(".")[0]))
    assert (header["alg"], header["kid"]) == ("ES256", row[1])


@pytest.mark.parametrize(
    ("replacements", "key_alg", "header_alg", "jwk"),
    [
        ({'seal_alg = "EdDSA"': 'seal_alg = "SM2"'}, "SM2", "SM2", ("EC", "SM2", "SM2")),
        (
            {'ed25519_alg = "EdDSA"': 'ed25519_alg = "Ed25519"'},
            "EdDSA",
            "Ed25519",
            ("OKP", "Ed25519", "Ed25519"),
        ),
    ],
)
def test_a_node_seals_with_the_federation_files_algorithm_and_name_and_verify_passes_it(
    tongban: TongBan,
    tmp_path: Path,
    replacements: dict[str, str],
    key_alg: str,
    header_alg: str,
    jwk: tuple[str, str, str],
) -> None:
    custom = federation_file(tmp_path, **replacements)
    listed = tongban("keys", "list", "--node", "zhuji", "--offline", federation=custom)
    [row] = [line.split() for line in listed.out.splitlines()[2:]]
    assert row[2] == key_alg
    assert tongban("seed", "--node", "zhuji", "--count", "1", federation=custom).code == 0
    exported = tongban("export", "--node", "zhuji", federation=custom)
    token = exported.out.strip().splitlines()[0]
    header = orjson.loads(b64url_decode(token.split(".")[0]))
    assert (header["alg"], header["kid"]) == (header_alg, row[1])
    # offline, with only the node's published JWKS
    store = KeyStore.open(
        tongban.keys_dir, NodeId("zhuji"), clock=SystemClock(), ed25519_name="Ed25519"
    )
    [published] = store.jwks()["keys"]
    assert (published["kty"], published["crv"], published["alg"]) == jwk
    (tmp_path / "jwks.json").write_bytes(orjson.dumps(store.jwks()))
    (tmp_path / "seal.jws").write_text(token, encoding="ascii")
    result = tongban("verify", str(tmp_path / "seal.jws"), "--jwks", str(tmp_path / "jwks.json"))
    assert (result.code, result.out.splitlines()[0]) == (0, "result: PASSED (ok)")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    (tmp_path / "forged.jws").write_text(forged, encoding="ascii")
    result = tongban("verify", str(tmp_path / "forged.jws"), "--jwks", str(tmp_path / "jwks.json"))
    assert (result.code, result.out.splitlines()[0]) == (1, "result: FAILED (seal.bad_signature)")


# --- a bad federation file -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[federation\nname = 1", "federation.toml"),
        ('[federation]\nname = "x"\nseal_alg = "RS256"\n', "seal_alg must be EdDSA, ES256 or SM2"),
        (
            '[federation]\nname = "x"\ned25519_alg = "Ed448"\n',
            "ed25519_alg must be EdDSA or Ed25519",
        ),
        ('[federation]\nname = "x"\n[surprise]\n', "unknown section"),
    ],
)
def test_a_bad_federation_file_exits_2_naming_the_problem(
    tongban: TongBan, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "federation.toml"
    path.write_text(content, encoding="utf-8")
    result = tongban("keys", "list", "--node", "zhuji", "--offline", federation=path)
    assert result.code == 2
    assert result.err.startswith(f"tongban: {path}")
    assert message in result.err
    assert not tongban.keys_dir.exists()


def test_a_missing_federation_file_exits_2(tongban: TongBan, tmp_path: Path) -> None:
    result = tongban("seed", "--node", "zhuji", "--count", "1", federation=tmp_path / "nope.toml")
    assert result.code == 2
    assert "cannot read the federation file" in result.err


# --- verify ----------------------------------------------------------------------------------


def test_verify_a_genuine_seal_exits_0_and_prints_the_report(
    tongban: TongBan, sealed: Sealed
) -> None:
    result = tongban("verify", str(sealed.seal), "--jwks", str(sealed.jwks))
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "result: PASSED (ok)"
    assert any(line.startswith("node: zhuji") for line in lines)
    for name in CERTIFICATE_CHECKS:
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "not checked" in result.out  # offline: no status source


def test_verify_a_tampered_seal_exits_1_and_says_why(tongban: TongBan, sealed: Sealed) -> None:
    result = tongban("verify", str(sealed.tampered), "--jwks", str(sealed.jwks))
    assert result.code == 1
    assert result.out.splitlines()[0] == "result: FAILED (seal.bad_signature)"
    assert re.search(r"^signature\s+FAILED", result.out, re.MULTILINE)


@pytest.mark.parametrize(
    ("which", "code", "indication", "report_code"),
    [("seal", 0, "PASSED", "ok"), ("tampered", 1, "FAILED", "seal.bad_signature")],
)
def test_verify_json(
    tongban: TongBan,
    sealed: Sealed,
    schemas: SchemaSet,
    which: str,
    code: int,
    indication: str,
    report_code: str,
) -> None:
    result = tongban("verify", str(getattr(sealed, which)), "--jwks", str(sealed.jwks), "--json")
    assert result.code == code
    report = orjson.loads(result.out)
    assert (report["indication"], report["code"]) == (indication, report_code)
    schemas.validate("exchange:verification-report", report)
    if code == 0:
        assert [check["name"] for check in report["checks"]] == CERTIFICATE_CHECKS
    else:
        assert [check["name"] for check in report["checks"]] == [
            "format",
            "header",
            "key",
            "signature",
        ]


def test_verify_with_the_node_named_checks_the_jwks_is_that_nodes(
    tongban: TongBan, sealed: Sealed
) -> None:
    ok = tongban("verify", str(sealed.seal), "--jwks", str(sealed.jwks), "--node", "zhuji")
    assert ok.code == 0
    other = tongban("verify", str(sealed.seal), "--jwks", str(sealed.jwks), "--node", "shanghai")
    assert other.code == 2
    assert "different node" in other.err


def _private_jwks(sealed: Sealed) -> bytes:
    jwks = orjson.loads(sealed.jwks.read_bytes())
    jwks["keys"][0]["d"] = jwks["keys"][0]["x"]
    return orjson.dumps(jwks)


def _duplicate_keys(sealed: Sealed) -> bytes:
    # a second "keys" member that a lenient parser would silently prefer
    return b'{"keys": [], ' + sealed.jwks.read_bytes()[1:]


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        (lambda s: b"not json", "not a strict JSON JWKS"),
        (_duplicate_keys, "duplicate member name 'keys'"),
        (lambda s: b'{"keys": {}}', '"keys" list'),
        (_private_jwks, "must not contain private keys"),
    ],
    ids=["not-json", "duplicate-member", "not-a-list", "private-key"],
)
def test_verify_with_a_bad_jwks_exits_2(
    tongban: TongBan, sealed: Sealed, tmp_path: Path, jwks: object, message: str
) -> None:
    bad = tmp_path / "bad-jwks.json"
    bad.write_bytes(jwks(sealed))  # type: ignore[operator]
    result = tongban("verify", str(sealed.seal), "--jwks", str(bad))
    assert result.code == 2
    assert result.err.startswith("tongban: ")
    assert message in result.err


def test_verify_a_missing_file_exits_2(tongban: TongBan, sealed: Sealed, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.jws"
    result = tongban("verify", str(missing), "--jwks", str(sealed.jwks))
    assert result.code == 2
    assert result.err.startswith(f"tongban: cannot read {missing}")


def test_python_dash_m_gateway_verifies_offline(sealed: Sealed) -> None:
    repo = Path(gateway.__file__).resolve().parent.parent
    argv = ["verify", str(sealed.seal), "--jwks", str(sealed.jwks), "--json"]
    completed = subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert orjson.loads(completed.stdout)["indication"] == "PASSED"


# --- a node's stores in PostgreSQL (issue 21) ----------------------------------------------


def test_db_migrate_seed_and_audit_verify_on_postgresql(tongban: TongBan, pg_dsn: Secret) -> None:
    dsn = pg_dsn.reveal()
    migrated = tongban("--database", dsn, "db", "migrate", "--node", "zhuji")
    assert migrated.code == 0, migrated.err
    assert "PostgreSQL" in migrated.out
    assert dsn not in migrated.out + migrated.err  # the URL may hold a password
    assert tongban("--database", dsn, "seed", "--node", "zhuji", "--count", "5").code == 0
    verified = tongban("--database", dsn, "audit", "verify", "--node", "zhuji")
    assert verified.code == 0, verified.err
    assert ": OK" in verified.out
    assert not (tongban.data_dir / "zhuji" / "registry.sqlite3").exists()  # all in the database
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM registry.certificates").fetchone() == (5,)
        conn.execute("UPDATE registry.schema_version SET version = 99")
    for store in ("cases", "cosignatures"):  # every store: none left behind in a file
        assert not (tongban.data_dir / "zhuji" / f"{store}.sqlite3").exists()
    newer = tongban("--database", dsn, "db", "migrate", "--node", "zhuji")
    assert newer.code == 2
    assert "schema version 99" in newer.err


def test_case_commands_read_the_case_store_in_postgresql(tongban: TongBan, pg_dsn: Secret) -> None:
    dsn = pg_dsn.reveal()
    assert tongban("--database", dsn, "db", "migrate", "--node", "zhuji").code == 0
    empty = tongban("--database", dsn, "cases", "list", "--node", "zhuji")
    assert empty.code == 0, empty.err
    assert "0 case(s) at zhuji" in empty.out
    now = time.time()
    case = Case(
        id="330681-20261124-000001",
        matter="maternity-benefit",
        channel=Channel.WINDOW,
        state=CaseState.RECEIVED,
        window=Party("zhuji", "zhuji-service-center"),
        owner=Party("shanghai", "shanghai-healthcare-security"),
        applicant=Applicant("111", "31010419950312123X", "陈思远", "ab" * 32),
        delivery=Delivery.ONLINE,
        received_at=now,
        due_at=now + 86_400,
        receipt="a.b.c",
        materials=(),
        seq=0,
        updated_at=now,
    )
    with PostgresCaseStore(pg_dsn) as store:  # what another replica of the node wrote
        assert store.arrive(CaseWrite(case))
    listed = tongban("--database", dsn, "cases", "list", "--node", "zhuji", "--json")
    assert listed.code == 0, listed.err
    assert [c["id"] for c in orjson.loads(listed.out)] == [case.id]
    shown = tongban("--database", dsn, "cases", "show", "--node", "zhuji", case.id)
    assert shown.code == 0, shown.err
    assert f"case {case.id}: maternity-benefit" in shown.out
    assert not (tongban.data_dir / "zhuji" / "cases.sqlite3").exists()


def test_national_migrates_its_catalog_and_authority_state(
    tongban: TongBan, pg_dsn: Secret
) -> None:
    assert tongban("--database", pg_dsn.reveal(), "db", "migrate", "--node", "national").code == 0
    with psycopg.connect(pg_dsn.reveal()) as conn:
        schemas = {
            row[0] for row in conn.execute("SELECT schema_name FROM information_schema.schemata")
        }
    assert {
        "registry",
        "audit",
        "nonces",
        "cases",
        "cosignatures",
        "catalog",
        "authority",
    } <= schemas


def test_database_needs_a_node_and_a_postgresql_url(tongban: TongBan, pg_dsn: Secret) -> None:
    refused = tongban("--database", pg_dsn.reveal(), "up")
    assert refused.code == 2
    assert "--database names one node's database" in refused.err
    wrong = tongban("--database", "sqlite:///x.db", "db", "migrate", "--node", "zhuji")
    assert wrong.code == 2
    assert "postgresql://" in wrong.err


def test_an_unreachable_database_stops_the_command(tongban: TongBan, tmp_path: Path) -> None:
    url = f"postgresql://nobody@/none?host={tmp_path}"  # no server listens there
    failed = tongban("--database", url, "db", "migrate", "--node", "zhuji")
    assert failed.code == 2
    assert "cannot open the certificate store in PostgreSQL" in failed.err
