"""Who owns which partition: an endpoint carried in each member's consumer-group metadata.

Kafka Streams answers interactive queries with ``application.server``: each member advertises
where it can be asked in its group subscription, so anyone can find the owner of a key's
partition from the group's current assignment. We do the same: :func:`assignor_with` is the
range assignor (the one the runtime uses, ``poll.py``) whose member metadata carries
``user_data`` (a worker puts its query URL there), and :func:`partition_owners` reads the
group's members (DescribeGroups) and says which ``user_data`` owns each partition of a topic.
The group coordinator's answer is the assignment of the current generation; while the group
rebalances it has no owners, and the caller asks again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

__all__ = ["assignor_with", "partition_owners"]


def assignor_with(user_data: bytes) -> type[Any]:
    """The range assignor, with ``user_data`` in this member's metadata (same protocol name, so
    members with and without it agree)."""
    if not user_data:
        return cast(type[Any], RangePartitionAssignor)

    class _Advertising(RangePartitionAssignor):  # type: ignore[misc]
        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, list(topics), user_data)

    return _Advertising


async def partition_owners(
    admin: AIOKafkaAdminClient, group_id: str, topic: str
) -> tuple[str, dict[int, bytes]]:
    """(group state, partition -> owner's metadata user_data) for ``topic`` in ``group_id``.

    Only a ``Stable`` group has a settled assignment; in any other state the map may be empty
    or partial."""
    (response,) = await admin.describe_consumer_groups([group_id])
    owners: dict[int, bytes] = {}
    state = "Dead"
    for group in response.groups:
        state = group[2]
        for member in group[5]:
            metadata_raw, assignment_raw = member[3], member[4]
            if not metadata_raw or not assignment_raw:
                continue
            user_data = ConsumerProtocolMemberMetadata.decode(metadata_raw).user_data or b""
            assignment = ConsumerProtocolMemberAssignment.decode(assignment_raw)
            for name, partitions in assignment.assignment:
                if name == topic:
                    for p in partitions:
                        owners[p] = user_data
    return state, owners
