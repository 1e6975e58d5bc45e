"""``tongban demo``: the seed's own case, end to end, on the default federation.

Every node of the federation file runs in this process on a free loopback port (the IdP,
national, Zhejiang, Shaoxing, Zhuji, Shanghai, Anhui, Linquan); they talk to each other only
over HTTP. The tour follows DESIGN.md "The demo":

1. At the Zhuji civil-affairs window two applicants register their marriage: one with a
   household register in Shanghai, one in Linquan (Anhui).
2. Each applicant logs in once at the IdP and grants ``zhuji-civil-affairs`` consent for the
   matter "marriage registration".
3. Zhuji's system looks their certificates up: Shanghai's over the hierarchy, Linquan's
   over the point-to-point link; each seal, schema and status is verified.
4. Zhuji issues the marriage certificates, sealed by its civil-affairs authority, and
   registers them in the national catalog.
5. Shanghai's node verifies the new seal; ``tongban verify`` verifies it offline from the
   trust list alone. A forged seal and an algorithm-confusion attack fail with their reasons.

6. Ops rotate Zhuji's seal key: the old certificate still verifies, new ones use the new key.
7. The case's audit trail is printed and each entry is proven in Zhuji's signed tree head.
8. 受办分离 · 代收代办: at Zhuji's 区域通办 window an applicant insured in Shanghai applies
   for 生育保险待遇; Zhuji receives (a sealed receipt) and forwards; Shanghai asks for one
   correction; Zhuji supplements; Shanghai accepts and approves (the result certificate is
   sealed in Shanghai); Zhuji fetches it with the applicant's consent and the case closes.
   Every step is a sealed event, the same at both ends, proven in its node's audit log.

Every step checks its outcome; the tour exits non-zero at the first surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway._internal.wire import b64url_decode, b64url_encode
from gateway.certificates.documents import certificate_date
from gateway.cli.commands import format_report, run_federation, verify_offline
from gateway.cli.console import heading, table
from gateway.cli.idp_client import IdpClient
from gateway.clock import SystemClock
from gateway.config import Federation, load_federation
from gateway.crypto.merkle import leaf_hash, verify_inclusion
from gateway.errors import NotFoundError
from gateway.ids import NATIONAL, CertificateId
from gateway.sso.consent import CONSENT_HEADER
from gateway.storage.catalog import SqliteCatalog
from gateway.trust.rootkey import ROOT_JWK_FILE

WINDOW = "zhuji"
MATTER = "marriage-registration"
NEEDED = ["resident_id", "household_register"]
GROOM = {"name": "陈思远", "id": "31010419950312123X", "id_type": "111"}  # household: Shanghai
BRIDE = {"name": "王晓燕", "id": "341221199607082464", "id_type": "111"}  # household: Linquan
READY_TIMEOUT = 60.0


class DemoFailure(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)
    print(f"  ✔ {what}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Client:
    """A departmental system calling a node with its access token."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, body: Any = None, *, consent: str | None = None
    ) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = dict(self.headers)
        if consent is not None:
            headers[CONSENT_HEADER] = consent
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data, headers=headers) as r:
            raw = await r.read()
            if r.content_type.endswith("json"):
                return r.status, orjson.loads(raw)
            return r.status, raw.decode()


async def run_demo(workdir: Path | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="tongban-demo-") as tmp:
        base = workdir or Path(tmp)
        try:
            await _tour(base)
        except DemoFailure as exc:
            print(f"\n✘ demo failed: {exc}", file=sys.stderr)
            return 1
    print("\nAll steps verified. 通办: handled anywhere.")
    return 0


async def _tour(base: Path) -> None:
    default = load_federation()
    federation = default.with_ports({n.id: free_port() for n in default.nodes}).with_overrides(
        data_dir=base / "var", keys_dir=base / "keys"
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    runner = asyncio.create_task(
        run_federation(
            federation, clock=SystemClock(), stop=stop, ready=lambda _urls: started.set()
        )
    )
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # a node could not start: raise its error
        async with aiohttp.ClientSession() as session:
            await _steps(session, federation, base)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def login(
    session: aiohttp.ClientSession, federation: Federation, idp: IdpClient, client_id: str
) -> Client:
    entry = next(c for c in federation.clients if c.id == client_id)
    secret = entry.demo_secret.reveal() if entry.demo_secret else ""
    token = await idp.client_credentials(client_id, secret)
    return Client(session, federation.url(entry.node), token)


async def wait_for_trust(session: aiohttp.ClientSession, federation: Federation) -> int:
    """Until every regional node trusts a list that holds every regional node's keys."""
    regions = {n.id for n in federation.nodes if n.kind == "region"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    pending, seq = set(regions), 0
    while pending and loop.time() < deadline:
        for node in sorted(pending):
            async with session.get(federation.url(node) + "/v1/trust-list") as response:
                if response.status != 200:
                    continue
                claims = orjson.loads(b64url_decode((await response.text()).split(".")[1]))
            if regions <= {n["id"] for n in claims["nodes"] if n["keys"]}:
                pending.discard(node)
                seq = max(seq, int(claims["seq"]))
        await asyncio.sleep(0.2)
    if pending:
        raise DemoFailure(f"no complete trust list yet at {sorted(pending)}")
    return seq


async def _steps(session: aiohttp.ClientSession, federation: Federation, base: Path) -> None:
    idp = IdpClient(session, federation.idp_issuer())
    print(heading("The federation (one process, every node on its own loopback port)"))
    seq = await wait_for_trust(session, federation)
    rows = [
        [n.id, n.name, n.region or "—", n.parent or "—", federation.url(n.id)]
        for n in federation.nodes
    ]
    print(table(["node", "name", "region", "parent", "url"], rows))
    link = " ↔ ".join(federation.agreements[0].nodes)
    expect(True, f"national published trust list #{seq} with every node's seal keys")
    print(f"  point-to-point agreement (点对点跨省通办): {link}")

    # Where the applicants' certificates come from: their home regions issued them earlier.
    shanghai = await login(session, federation, idp, "shanghai-public-security")
    linquan = await login(session, federation, idp, "linquan-public-security")
    for office, person, address in (
        (shanghai, GROOM, "上海市徐汇区漕溪北路88号"),
        (linquan, BRIDE, "安徽省阜阳市临泉县城关镇人民路18号"),
    ):
        for request in home_certificates(person, address):
            status, body = await office.call("POST", "/v1/certificates", request)
            if status != 201:
                raise DemoFailure(f"setup: {office.base} refused {request['type']}: {body}")

    print(heading("1. Two applicants at the Zhuji civil-affairs window (结婚登记)"))
    print(
        table(
            ["applicant", "ID number", "household register"],
            [
                [GROOM["name"], GROOM["id"], "上海市 (shanghai)"],
                [BRIDE["name"], BRIDE["id"], "临泉县 (linquan)"],
            ],
        )
    )

    print(heading("2. One login each, and consent for this one matter (用证授权)"))
    window = await login(session, federation, idp, "zhuji-civil-affairs")
    consents: dict[str, str] = {}
    until = int(SystemClock().now()) + 3600
    for person in (GROOM, BRIDE):
        citizen = next(c for c in federation.citizens if c.id == person["id"])
        password = citizen.demo_password.reveal() if citizen.demo_password else ""
        holder_token = await idp.holder_login(citizen.id, password)
        consents[person["id"]] = await idp.grant_consent(
            holder_token,
            department="zhuji-civil-affairs",
            matter=MATTER,
            types=NEEDED,
            until=until,
        )
        expect(
            True,
            f"{person['name']} logged in at the IdP and granted zhuji-civil-affairs "
            f"{'+'.join(NEEDED)} for {MATTER}, for one hour",
        )
    status, body = await window.call("POST", "/v1/lookups", lookup(GROOM))
    expect(
        (status == 403 and body.get("code") == "consent.required") or _no_results(body),
        "without the holder's grant, nothing personal leaves the holding region",
    )

    print(heading("3. Zhuji looks the certificates up across the federation"))
    fetched: list[dict[str, Any]] = []
    for person in (GROOM, BRIDE):
        status, body = await window.call(
            "POST", "/v1/lookups", lookup(person), consent=consents[person["id"]]
        )
        expect(
            status == 200 and len(body["results"]) == 2 and not body["failures"],
            f"{person['name']}: national's catalog named 2 certificates; both fetched",
        )
        fetched.extend(body["results"])
    print(
        table(
            ["type", "holder node", "route", "verification"],
            [
                [
                    r["type"],
                    r["node"],
                    " → ".join(r["route"]),
                    f"{r['report']['indication']} ({r['report']['code']})",
                ]
                for r in fetched
            ],
        )
    )
    expect(
        all(r["report"]["indication"] == "PASSED" for r in fetched),
        "every seal, schema and status verified by Zhuji against the trust list",
    )
    routes = {r["node"]: r["route"] for r in fetched}
    expect(
        routes["shanghai"] == ["zhuji", "shaoxing", "zhejiang", "national", "shanghai"],
        "Shanghai's over the hierarchy, up to the lowest common ancestor and down",
    )
    expect(routes["linquan"] == ["zhuji", "linquan"], "Linquan's over the point-to-point link")
    print("\n  one report in full:")
    print(format_report(fetched[0]["report"]))

    print(heading("4. Zhuji issues the marriage certificates (sealed by 诸暨市民政局)"))
    today = certificate_date(SystemClock().now()).isoformat()
    marriage: list[dict[str, Any]] = []
    for holder, spouse in ((GROOM, BRIDE), (BRIDE, GROOM)):
        status, body = await window.call(
            "POST",
            "/v1/certificates",
            {
                "type": "marriage",
                "holder": holder,
                "valid_from": today,
                "valid_until": None,
                "data": {
                    "registration_date": today,
                    "spouse": spouse,
                    "registration_office": "诸暨市民政局婚姻登记处",
                },
            },
        )
        expect(
            status == 201 and body["report"]["indication"] == "PASSED",
            f"结婚证 for {holder['name']}: {body.get('certificate_id')}",
        )
        marriage.append(body)
    await wait_catalogued(federation, [str(body["certificate_id"]) for body in marriage])

    print(heading("5. Shanghai verifies the new seal; then anyone can, offline"))
    seal = marriage[0]["seal"]
    forged = tamper(seal, lambda d: d["holder"].update(name="李四"))
    confused = hs256_with_public_key(seal, await zhuji_key(session, federation))
    status, body = await shanghai.call(
        "POST", "/v1/seals/verify", {"seals": [seal, forged, confused]}
    )
    verdicts = [(r["indication"], r["code"]) for r in body["reports"]]
    print(
        table(
            ["seal", "indication", "code"],
            [
                ["Zhuji's marriage certificate", *verdicts[0]],
                ["holder renamed", *verdicts[1]],
                ["HS256 keyed with the public key", *verdicts[2]],
            ],
        )
    )
    expect(verdicts[0] == ("PASSED", "ok"), "Shanghai trusts Zhuji's seal through the trust list")
    expect(verdicts[1][1] == "seal.bad_signature", "a tampered certificate fails its signature")
    expect(verdicts[2][1] == "seal.alg_not_allowed", "algorithm confusion is refused")

    seal_file, trust_file = base / "marriage.jws", base / "trust-list.jws"
    seal_file.write_text(seal + "\n", encoding="ascii")
    async with session.get(federation.url("shanghai") + "/v1/trust-list") as response:
        trust_file.write_text(await response.text(), encoding="ascii")
    root = federation.keys_dir / "_federation" / ROOT_JWK_FILE
    print(
        f"\n  $ tongban verify {seal_file.name} --trust-list {trust_file.name} "
        f"--root-key {root.name}"
    )
    code = verify_offline(seal_file, trust_list_file=trust_file, root_key=root)
    expect(code == 0, "offline, from the root key and the trust list alone: exit 0, PASSED")

    print(heading("6. Ops rotate Zhuji's seal key (no verification ever fails)"))
    ops = await login(session, federation, idp, "zhuji-ops")
    old_kid = orjson.loads(b64url_decode(seal.split(".")[0]))["kid"]
    status, rotated = await ops.call("POST", "/v1/admin/keys/rotate")
    expect(
        status == 200 and rotated["previous"] == old_kid,
        f"next key pre-published, then activated once every node trusted it "
        f"(trust list #{rotated.get('trust_list_seq')})",
    )
    status, body = await shanghai.call("POST", "/v1/seals/verify", {"seals": [seal]})
    expect(
        body["reports"][0]["indication"] == "PASSED",
        "the marriage certificate sealed with the old (now retired) key still verifies",
    )
    status, body = await window.call(
        "POST",
        "/v1/certificates",
        {
            "type": "marriage",
            "holder": GROOM,
            "valid_from": today,
            "valid_until": None,
            "data": {
                "registration_date": today,
                "spouse": BRIDE,
                "registration_office": "诸暨市民政局婚姻登记处",
            },
        },
    )
    new_kid = orjson.loads(b64url_decode(body["seal"].split(".")[0]))["kid"]
    expect(new_kid == rotated["active"] != old_kid, "new certificates are sealed with the new key")
    status, keys = await ops.call("GET", "/v1/admin/keys")
    print(
        table(
            ["state", "kid", "alg", "activates", "expires"],
            [[k["state"], k["kid"], k["alg"], k["activates"], k["expires"]] for k in keys["keys"]],
        )
    )

    print(heading("7. The case's audit trail at Zhuji (tamper-evident, RFC 9162)"))
    status, head = await ops.call("GET", "/v1/audit/head")
    status, page = await ops.call("GET", f"/v1/audit/entries?start=0&end={head['tree_size']}")
    case = [
        e for e in page["entries"] if e["kind"] in ("fetch", "consent_use", "issuance", "key_event")
    ]
    print(
        table(
            ["seq", "kind", "actor", "subject"],
            [[e["seq"], e["kind"], e["actor"], (e["subject"] or "")[-28:]] for e in case],
        )
    )
    for entry in case:
        await prove_included(ops, entry, head)
    expect(
        True,
        f"each of the {len(case)} entries is proven in the signed tree head "
        f"(size {head['tree_size']})",
    )
    expect(
        not any(
            GROOM["id"] in orjson.dumps(e).decode() or BRIDE["id"] in orjson.dumps(e).decode()
            for e in page["entries"]
        ),
        "no holder ID number in clear anywhere in the log (keyed digests only)",
    )
    resident_id = next(
        r["certificate_id"]
        for r in fetched
        if r["type"] == "resident_id" and r["node"] == "shanghai"
    )
    await _case_act(session, federation, base, idp, resident_id)


async def prove_included(ops: Client, entry: dict[str, Any], head: dict[str, Any]) -> None:
    """``entry`` of an audit log is in the tree ``head`` signed (RFC 9162 inclusion proof,
    checked here); raises what :func:`verify_inclusion` raises otherwise."""
    _, proof = await ops.call(
        "GET", f"/v1/audit/proofs/inclusion?seq={entry['seq']}&tree_size={head['tree_size']}"
    )
    verify_inclusion(
        leaf_hash(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)),
        entry["seq"],
        head["tree_size"],
        [b64url_decode(p) for p in proof["proof"]],
        b64url_decode(head["root_hash"]),
    )


CASE_MATTER = "maternity-benefit"


def _b64(data: bytes) -> str:
    return b64url_encode(data)


async def _until_state(client: Client, case_id: str, state: str) -> dict[str, Any]:
    """The case as ``client``'s node holds it, once it is in ``state``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while True:
        status, body = await client.call("GET", f"/v1/cases/{case_id}")
        if status == 200 and body["state"] == state:
            return dict(body)
        if loop.time() > deadline:
            raise DemoFailure(f"case {case_id} never became {state} at {client.base}: {body}")
        await asyncio.sleep(0.05)


async def _case_act(
    session: aiohttp.ClientSession,
    federation: Federation,
    base: Path,
    idp: IdpClient,
    resident_id: str,
) -> None:
    print(
        heading("8. 受办分离 · 代收代办: Zhuji's window receives, Shanghai decides (生育保险待遇)")
    )
    window = await login(session, federation, idp, "zhuji-service-center")
    owner = await login(session, federation, idp, "shanghai-healthcare-security")
    invoices = "%PDF-1.7 ... 生育医疗费用票据 (scan)".encode()
    application = {
        "matter": CASE_MATTER,
        "owner": {"node": "shanghai"},
        "channel": "window",
        "applicant": GROOM,
        "identity_checked_by": "zj-window-0421",
        "delivery": "online",
        "materials": {
            "application-form": {
                "content": _b64(b'{"form": "maternity-benefit", "births": 1}'),
                "media_type": "application/json",
            },
            "resident-id": {"certificate_id": resident_id},
            "birth-medical-certificate": {
                "content": _b64("%PDF-1.7 ... 出生医学证明 (scan)".encode()),
                "media_type": "application/pdf",
                "checked_original": True,
            },
            "medical-invoices": {"content": _b64(invoices), "media_type": "application/pdf"},
            "bank-account": {"declared": True},
        },
    }
    incomplete = {**application, "materials": {"bank-account": {"declared": True}}}
    status, body = await window.call("POST", "/v1/cases", incomplete)
    missing = [e["pointer"] for e in body.get("errors", [])] if isinstance(body, dict) else []
    expect(
        status == 422 and body.get("code") == "case.materials_missing" and len(missing) == 4,
        "an incomplete application is refused naming every missing material at once: "
        + ", ".join(missing),
    )
    status, case = await window.call("POST", "/v1/cases", application)
    expect(status == 201, f"Zhuji's window received case {case.get('id')} for Shanghai's 医保局")
    case_id = case["id"]
    print(
        table(
            ["material", "form", "level", "digest or certificate"],
            [
                [
                    m["id"],
                    m["form"],
                    m["level"],
                    (m.get("sha256") or m.get("certificate_id", ""))[:24],
                ]
                for m in case["materials"]
            ],
        )
    )
    receipt_file, trust_file = base / "receipt.jws", base / "trust-list.jws"
    receipt_file.write_text(case["receipt"] + "\n", encoding="ascii")
    async with session.get(federation.url("zhuji") + "/v1/trust-list") as response:
        trust_file.write_text(await response.text(), encoding="ascii")  # after the rotation
    print(
        f"\n  $ tongban verify {receipt_file.name} --trust-list trust-list.jws "
        "--root-key root.jwk.json"
    )
    code = verify_offline(
        receipt_file,
        trust_list_file=trust_file,
        root_key=federation.keys_dir / "_federation" / ROOT_JWK_FILE,
    )
    expect(code == 0, "the sealed receipt (收件凭证) verifies offline, like any seal")

    arrived = await _until_state(owner, case_id, "pending_acceptance")
    expect(True, f"forwarded under hop proofs; arrived in Shanghai, due {arrived['due_at'][:10]}")
    status, body = await owner.call(
        "POST",
        f"/v1/cases/{case_id}/actions",
        {
            "action": "request_correction",
            "items": [{"material": "medical-invoices", "reason": "票据不清晰，请重新扫描上传"}],
        },
    )
    expect(status == 200, "Shanghai asks for one correction (一次性补正告知), a sealed event")
    await _until_state(window, case_id, "awaiting_correction")
    status, body = await window.call(
        "POST",
        f"/v1/cases/{case_id}/actions",
        {
            "action": "supplement",
            "materials": {
                "medical-invoices": {
                    "content": _b64(invoices + b" (rescanned)"),
                    "media_type": "application/pdf",
                    "checked_original": True,
                }
            },
        },
    )
    expect(
        status == 200 and body["state"] == "pending_acceptance",
        "Zhuji supplements the invoices; Shanghai took the event before Zhuji wrote it",
    )
    status, body = await owner.call("POST", f"/v1/cases/{case_id}/actions", {"action": "approve"})
    expect(
        status == 409 and body.get("code") == "case.bad_transition",
        f"approving before accepting is refused (409), allowed now: {body.get('allowed')}",
    )
    status, body = await owner.call("POST", f"/v1/cases/{case_id}/actions", {"action": "accept"})
    expect(status == 200, "Shanghai accepts (受理)")
    today = certificate_date(SystemClock().now()).isoformat()
    status, body = await owner.call(
        "POST",
        f"/v1/cases/{case_id}/actions",
        {
            "action": "approve",
            "result": {
                "valid_from": today,
                "valid_until": None,
                "data": {
                    "decision_date": today,
                    "medical_expenses": 5230.0,
                    "allowance_days": 128,
                    "allowance_amount": 42150.4,
                },
            },
        },
    )
    expect(status == 200 and body.get("result"), "Shanghai approves; the result is sealed there")
    decision = body["result"]["certificate_id"]
    status, body = await owner.call(
        "POST",
        f"/v1/cases/{case_id}/actions",
        {"action": "deliver", "delivery": {"method": "online"}},
    )
    expect(status == 200, f"decision {decision} delivered online")
    await _until_state(window, case_id, "delivered")

    citizen = next(c for c in federation.citizens if c.id == GROOM["id"])
    password = citizen.demo_password.reveal() if citizen.demo_password else ""
    holder_token = await idp.holder_login(citizen.id, password)
    consent = await idp.grant_consent(
        holder_token,
        department="zhuji-service-center",
        matter=CASE_MATTER,
        types=["maternity_benefit"],
        until=int(SystemClock().now()) + 3600,
    )
    status, fetched = await window.call(
        "GET", f"/v1/certificates/{decision}?matter={CASE_MATTER}", consent=consent
    )
    expect(
        status == 200 and fetched["report"]["indication"] == "PASSED",
        "with the applicant's consent, Zhuji fetches the sealed decision: "
        + " → ".join(fetched.get("route", [])),
    )
    status, body = await window.call("POST", f"/v1/cases/{case_id}/actions", {"action": "complete"})
    expect(status == 200 and body["state"] == "closed", "handed over at Zhuji: the case closes")
    await _until_state(owner, case_id, "closed")

    _, here = await window.call("GET", f"/v1/cases/{case_id}/events")
    _, there = await owner.call("GET", f"/v1/cases/{case_id}/events")
    print(
        table(
            ["#", "action", "state", "sealed by", "actor"],
            [
                [e["seq"], e["action"], f"{e['from']} → {e['to']}", e["iss"], e["actor"]]
                for e in there["events"]
            ],
        )
    )
    expect(
        [e["event"] for e in here["events"]] == [e["event"] for e in there["events"]],
        f"both ends hold the same {len(there['events'])} sealed events, in the same order",
    )
    proven = 0
    for node, client_id in (("zhuji", "zhuji-ops"), ("shanghai", "shanghai-ops")):
        ops = await login(session, federation, idp, client_id)
        proven += await _prove_events(ops, node, there["events"])
    expect(
        proven == len(there["events"]),
        f"each of the {proven} events is in its acting node's audit log, proven in its signed head",
    )


async def _prove_events(ops: Client, node: str, events: list[dict[str, Any]]) -> int:
    """How many of ``events`` sealed by ``node`` its audit log holds, each proven included."""
    _, head = await ops.call("GET", "/v1/audit/head")
    _, page = await ops.call("GET", f"/v1/audit/entries?start=0&end={head['tree_size']}")
    by_event = {e["details"].get("event"): e for e in page["entries"] if e["kind"] == "case_event"}
    proven = 0
    for event in events:
        if event["iss"] != node:
            continue
        entry = by_event.get(event["id"])
        if (
            entry is None
            or entry["details"]["digest"] != hashlib.sha256(event["event"].encode()).hexdigest()
        ):
            raise DemoFailure(f"event {event['seq']} is not in {node}'s audit log")
        await prove_included(ops, entry, head)
        proven += 1
    return proven


def home_certificates(person: dict[str, str], address: str) -> list[dict[str, Any]]:
    birth = f"{person['id'][6:10]}-{person['id'][10:12]}-{person['id'][12:14]}"
    sex = "男" if int(person["id"][16]) % 2 else "女"
    return [
        {
            "type": "resident_id",
            "holder": person,
            "valid_from": "2016-03-01",
            "valid_until": "2036-03-01",
            "data": {
                "sex": sex,
                "ethnicity": "汉族",
                "birth_date": birth,
                "address": address,
                "issuing_office": "公安局",
            },
        },
        {
            "type": "household_register",
            "holder": person,
            "valid_from": "2008-05-12",
            "valid_until": None,
            "data": {
                "household_number": person["id"][:9],
                "household_type": "家庭户",
                "relation_to_head": "户主",
                "address": address,
                "registration_office": "公安局户政科",
            },
        },
    ]


async def wait_catalogued(federation: Federation, cert_ids: list[str]) -> None:
    """Each of ``cert_ids`` registered by Zhuji in national's catalog (delivered from
    Zhuji's outbox in the background), read from national's own store within
    :data:`READY_TIMEOUT`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    with SqliteCatalog(federation.data_dir / NATIONAL / "catalog.sqlite3") as catalog:
        for cert_id in cert_ids:
            while True:
                try:
                    entry = catalog.get(CertificateId(cert_id))
                    break
                except NotFoundError:
                    if loop.time() > deadline:
                        raise DemoFailure(f"{cert_id} never reached national's catalog") from None
                    await asyncio.sleep(0.05)
            expect(
                entry.node == WINDOW and len(entry.holder_digest) == 64,
                f"{cert_id} in national's catalog: held by {entry.node},"
                f" holder {entry.holder_digest[:12]}… (a keyed digest, never the id)",
            )


def lookup(person: dict[str, str]) -> dict[str, Any]:
    return {"matter": MATTER, "holder": {"id": person["id"], "id_type": "111"}, "types": NEEDED}


def _no_results(body: Any) -> bool:
    return isinstance(body, dict) and not body.get("results") and bool(body.get("failures"))


async def zhuji_key(session: aiohttp.ClientSession, federation: Federation) -> dict[str, Any]:
    async with session.get(federation.url(WINDOW) + "/.well-known/jwks.json") as response:
        keys: list[dict[str, Any]] = (await response.json())["keys"]
    return next(k for k in keys if k["status"] == "active")


def tamper(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    header, payload, signature = token.split(".")
    document = orjson.loads(b64url_decode(payload))
    change(document)
    return ".".join((header, b64url_encode(orjson.dumps(document)), signature))


def hs256_with_public_key(token: str, jwk: dict[str, Any]) -> str:
    """The classic algorithm-confusion forgery: HMAC keyed with the published public key."""
    header = orjson.loads(b64url_decode(token.split(".", maxsplit=1)[0]))
    header["alg"] = "HS256"
    signing_input = f"{b64url_encode(orjson.dumps(header))}.{token.split('.')[1]}"
    mac = hmac.new(b64url_decode(jwk["x"]), signing_input.encode("ascii"), hashlib.sha256)
    return f"{signing_input}.{b64url_encode(mac.digest())}"
