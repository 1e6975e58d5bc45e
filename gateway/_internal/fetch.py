"""The one bounded GET of a peer's document: total timeout, size cap, allowed types.

The trust list, status lists, JWKS and partners' audit heads are all fetched through
:func:`fetch_bounded`: no redirect is followed, a body larger than the cap is refused while
it is read (not after), and every failure is a :class:`~gateway.errors.NetworkError` with
the caller's code prefix.
"""

from __future__ import annotations

import aiohttp

from gateway.errors import (
    NetworkError,
    UpstreamTimeout,
)


async def fetch_bounded(
    session: aiohttp.ClientSession,
    url: str,
    *,
    fetch_timeout: float,
    max_bytes: int,
    content_types: frozenset[str],
    accept: str,
    code_prefix: str,
) -> bytes:
    """GET ``url``: a 200 with an allowed content type and at most ``max_bytes`` of body.

    Redirects are never followed. Raises :class:`UpstreamTimeout` ``<prefix>.fetch_timeout``
    or :class:`NetworkError` ``<prefix>.fetch_failed`` (the cause in ``log_detail``).
    """
    failed = f"{code_prefix}.fetch_failed"
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=fetch_timeout),
            allow_redirects=False,
            headers={"Accept": accept},
        ) as response:
            if response.status != 200:
                raise NetworkError(
                    "the fetch failed", code=failed, log_detail=f"{url}: HTTP {response.status}"
                )
            if response.content_type not in content_types:
                raise NetworkError(
                    "the fetch failed",
                    code=failed,
                    log_detail=f"{url}: content type {response.content_type[:100]!r}",
                )
            length = response.content_length
            if length is not None and length > max_bytes:
                raise NetworkError(
                    "the fetch failed", code=failed, log_detail=f"{url}: Content-Length {length}"
                )
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = await response.content.read(max_bytes + 1 - size)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > max_bytes:
                    raise NetworkError(
                        "the fetch failed",
                        code=failed,
                        log_detail=f"{url}: body over {max_bytes} bytes",
                    )
                chunks.append(chunk)
    except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError subclasses
        raise UpstreamTimeout(
            "the fetch timed out",
            code=f"{code_prefix}.fetch_timeout",
            log_detail=f"{url}: no answer within {fetch_timeout} s",
        ) from exc
    except aiohttp.ClientError as exc:
        raise NetworkError(
            "the fetch failed", code=failed, log_detail=f"{url}: {type(exc).__name__}: {exc}"
        ) from exc
