"""Feast's serialized entity key of a `customer_id`, built without a proto per id.

Shared by the direct online reader (`serving.online_sqlite`) and the direct materializer
(`features.materialize`): both must produce exactly the bytes of Feast's `serialize_entity_key`.
Feast is imported only when an encoder is made.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from features.schema import ENTITY_KEY

__all__ = ["EntityKeyEncoder"]


class EntityKeyEncoder:
    """Feast's serialized entity key of a `customer_id` string, without a proto per id.

    The key is a fixed prefix, the id's UTF-8 length (uint32 LE) and its bytes; the prefix is
    taken from Feast's own `serialize_entity_key` and checked on two probes, else every id goes
    through Feast's function.
    """

    def __init__(self, version: int) -> None:
        self.version = version
        self.prefix: bytes | None = None
        probe = self._feast("x")
        tail = struct.pack("<I", 1) + b"x"
        if probe.endswith(tail):
            prefix = probe[: -len(tail)]
            other = "customer-éß"
            encoded = other.encode()
            if self._feast(other) == prefix + struct.pack("<I", len(encoded)) + encoded:
                self.prefix = prefix

    def encode(self, ids: Sequence[str]) -> list[bytes]:
        """The serialized key of each id, in order."""
        if self.prefix is None:
            return [self._feast(c) for c in ids]
        pack, prefix = struct.Struct("<I").pack, self.prefix
        out = []
        for customer in ids:
            raw = customer.encode()
            out.append(prefix + pack(len(raw)) + raw)
        return out

    def _feast(self, customer: str) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=customer)])
        return serialize_entity_key(key, entity_key_serialization_version=self.version)
