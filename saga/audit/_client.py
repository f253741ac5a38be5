"""Read the independent auditor's view over its web API (``GET /outcomes``, paged).

The auditor (``services/audit``) answers ``GET /outcomes?after=ID&limit=N`` with
``{"sagas": [outcome, ...], "next": ID | null}`` in saga id order (see
:meth:`saga.audit.SagaOutcome.to_json` for one outcome). aiohttp errors are translated
here, once, into :class:`saga.errors.AuditorUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Final

import aiohttp

from saga.audit._reconcile import SagaOutcome
from saga.errors import AuditorUnavailable

_FOREIGN: Final[tuple[type[Exception], ...]] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ValueError,  # a body that is not JSON, or not the expected shape
)


@contextmanager
def _translate(url: str) -> Iterator[None]:
    try:
        yield
    except _FOREIGN as exc:
        raise AuditorUnavailable(f"auditor at {url}: {exc or type(exc).__name__}") from exc


async def auditor_outcome_pages(
    base_url: str, *, page_size: int = 500, timeout_s: float = 30.0
) -> AsyncIterator[list[SagaOutcome]]:
    """The auditor's outcomes, one page at a time, in saga id order.

    Args:
        base_url: Where the auditor's web view listens, e.g. ``http://127.0.0.1:6066``.
        page_size: Sagas per request.
        timeout_s: Time limit of each request.

    Raises:
        AuditorUnavailable: The auditor cannot be reached, or answered something else
            than a page of outcomes.
    """
    url = base_url.rstrip("/") + "/outcomes"
    after = ""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    with _translate(url):
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                params = {"after": after, "limit": str(page_size)}
                async with session.get(url, params=params) as response:
                    if response.status != 200:
                        text = (await response.text())[:200]
                        raise AuditorUnavailable(
                            f"auditor at {url} answered {response.status}: {text}"
                        )
                    body: Any = await response.json(content_type=None)
                if not isinstance(body, dict) or not isinstance(body.get("sagas"), list):
                    raise ValueError("the answer has no 'sagas' list")
                yield [SagaOutcome.from_json(item) for item in body["sagas"]]
                nxt = body.get("next")
                if not nxt:
                    return
                after = str(nxt)


async def auditor_view(base_url: str, *, page_size: int = 500) -> dict[str, SagaOutcome]:
    """The auditor's whole view: saga id -> outcome.

    Raises:
        AuditorUnavailable: See :func:`auditor_outcome_pages`.
    """
    view: dict[str, SagaOutcome] = {}
    async for page in auditor_outcome_pages(base_url, page_size=page_size):
        view.update((o.saga_id, o) for o in page)
    return view
