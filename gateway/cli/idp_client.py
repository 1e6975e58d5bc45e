"""A client of the federation IdP: what departmental systems and the citizen portal call.

Used by ``tongban token`` and the demo; any OAuth 2.0 client library would do the same.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote_plus

import aiohttp
import orjson

from gateway.errors import AuthError, NetworkError
from gateway.services.idp import HOLDER_GRANT


class IdpClient:
    def __init__(self, session: aiohttp.ClientSession, issuer: str) -> None:
        self._session = session
        self.issuer = issuer.rstrip("/")

    async def client_credentials(
        self, client_id: str, secret: str, *, scope: str | None = None
    ) -> str:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        # RFC 6749 §2.3.1: form-encode the credentials, then HTTP Basic.
        basic = aiohttp.encode_basic_auth(quote_plus(client_id), quote_plus(secret))
        return str((await self._post_form("/token", form, authorization=basic))["access_token"])

    async def holder_login(self, holder_id: str, password: str) -> str:
        form = {"grant_type": HOLDER_GRANT, "username": holder_id, "password": password}
        return str((await self._post_form("/token", form))["access_token"])

    async def grant_consent(
        self, holder_token: str, *, department: str, matter: str, types: list[str], until: int
    ) -> str:
        body = {"department": department, "matter": matter, "types": types, "until": until}
        async with self._session.post(
            f"{self.issuer}/consents",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {holder_token}", "Content-Type": "application/json"},
        ) as response:
            answer = await _json(response)
        return str(answer["consent"])

    async def _post_form(
        self, path: str, form: dict[str, str], *, authorization: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": authorization} if authorization else None
        async with self._session.post(
            f"{self.issuer}{path}", data=form, headers=headers
        ) as response:
            return await _json(response)


MAX_ANSWER_BYTES: Final = 65_536
"""A token or a consent grant answer is a few kilobytes: anything larger is refused."""


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await response.content.read(MAX_ANSWER_BYTES + 1)
    if len(raw) > MAX_ANSWER_BYTES:
        raise NetworkError(f"the IdP answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NetworkError(f"the IdP answered {response.status} without JSON") from exc
    if response.status >= 400 or not isinstance(body, dict):
        code = body.get("code", "oauth.error") if isinstance(body, dict) else "oauth.error"
        detail = body.get("detail", "refused") if isinstance(body, dict) else "refused"
        raise AuthError(f"the IdP refused: {detail}", code=str(code))
    return body
