"""Find the worker that owns a part's partition and ask it; answer here when it is us.

Each worker advertises its support URL in its consumer-group member metadata
(``wxsub.streams.membership``), as Kafka Streams advertises ``application.server``. To answer a
part for a key, a worker reads its own committed store when it owns the key's partition (p =
murmur2(key) % partitions, as every producer partitions it); otherwise it asks the group
coordinator which member owns p of the stage's input (DescribeGroups: the current generation's
assignment), and forwards the request to that member's URL, marked as forwarded so that the
owner answers from its store or says it cannot (HTTP 503), never forwards again. During a
rebalance the group has no settled owner, or the owner has not restored p yet: the router asks
again (fresh owners) until ``deadline_s``, then gives up with :class:`Unavailable`. So an answer
always comes from the committed store of the partition's owner of the moment, or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from wxsub.settings import Settings
from wxsub.streams.connection import client_kwargs
from wxsub.streams.membership import partition_owners
from wxsub.support.local import PARTS, Local

__all__ = ["FORWARDED", "Router", "Unavailable"]

log = logging.getLogger(__name__)

FORWARDED = "X-Wxsub-Forwarded"
_OWNERS_TTL_S = 2.0


class Unavailable(Exception):
    """No worker could answer the part now (the stage runs nowhere, or a rebalance outlasted
    the deadline)."""


class Router:
    def __init__(self, local: Local, settings: Settings, *, deadline_s: float = 15.0) -> None:
        self._local = local
        self._settings = settings
        self._deadline_s = deadline_s
        self._url = settings.support.url
        token = settings.support.token
        self._headers = {FORWARDED: "1"}
        if token:
            self._headers["Authorization"] = f"Bearer {token.reveal()}"
        self._admin: AIOKafkaAdminClient | None = None
        self._http: aiohttp.ClientSession | None = None
        # stage -> (monotonic time read, group state, partition -> owner URL)
        self._owners: dict[str, tuple[float, str, dict[int, str]]] = {}

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def ask(self, part: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The part's answer from the owner of its partition (here or forwarded)."""
        stage = PARTS[part][0]
        p = self._local.partition(part, params)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        why = "no owner yet"
        while True:
            doc = self._local.read(part, params)
            if doc is not None:
                return doc
            state, owners = await self._owners_of(stage, fresh=why != "no owner yet")
            url = owners.get(p)
            if url is None and state in ("Dead", "Empty"):
                raise Unavailable(f"no worker runs the {stage} stage")
            if url is not None and url != self._url:
                doc = await self._forward(url, part, params)
                if doc is not None:
                    return doc
                why = f"{url} did not answer"
            else:
                why = f"partition {p} of {stage} is moving"
            if loop.time() > deadline:
                raise Unavailable(f"{part}: {why}")
            await asyncio.sleep(0.3)

    async def _owners_of(self, stage: str, fresh: bool) -> tuple[str, dict[int, str]]:
        hit = self._owners.get(stage)
        if hit is not None and not fresh and time.monotonic() - hit[0] < _OWNERS_TTL_S:
            return hit[1], hit[2]
        group = f"{self._settings.worker.app_id}-{stage}"
        topic = self._settings.kafka.topic(PARTS_INPUT[stage])
        try:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(**client_kwargs(self._settings.kafka))
                await self._admin.start()
            state, raw = await partition_owners(self._admin, group, topic)
        except KafkaError as exc:
            log.warning("cannot read the group's owners", extra={"group": group, "error": str(exc)})
            return "Unknown", {}
        owners = {p: data.decode("utf-8", "replace") for p, data in raw.items() if data}
        self._owners[stage] = (time.monotonic(), state, owners)
        return state, owners

    async def _forward(
        self, url: str, part: str, params: Mapping[str, str]
    ) -> dict[str, Any] | None:
        """The owner's local answer, or None (it does not own the partition now, or is gone)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._http.get(
                f"{url}/support/local/{part}", params=dict(params), headers=self._headers
            ) as resp:
                if resp.status != 200:
                    return None
                doc: dict[str, Any] = orjson.loads(await resp.read())
                return doc
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None


PARTS_INPUT = {stage: topic for stage, _, topic in PARTS.values()}
