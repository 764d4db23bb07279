"""Erasing a customer's Feast online rows (the engine cannot import Feast: engine.runtime.erasure
takes this as a hook). Feast has no API to delete one entity's rows, so this deletes them where
each online store keeps them, with Feast's own key functions:

- SQLite (embedded): one table per feature view (``feast...sqlite._table_id``), rows keyed by the
  serialized entity key (``serialize_entity_key``): ``DELETE ... WHERE entity_key = ?``;
- Redis (production): one hash per entity key holds every view (``helpers._redis_key``): one DEL.

Those are Feast internals (checked on Feast 0.67): a test writes rows with Feast, erases, and
reads them back through Feast's own ``get_online_features`` as absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["erase_online_rows"]


def erase_online_rows(
    customer_id: str,
    home: Path | str | None = None,
    production: bool | None = None,
    *,
    project: str | None = None,
) -> dict[str, Any]:
    """Delete the customer's rows from the Feast online store; returns what was removed.

    `project` overrides the Feast project (as in `features.store.open_store`). The embedded
    store without an online database (nothing was ever materialized) has nothing to erase:
    answered without importing Feast, which costs seconds.
    """
    from features.paths import feast_dir, production_selected

    if not production_selected(production) and not (feast_dir(home) / "online_store.db").exists():
        return {"store": "sqlite", "rows": 0}
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from features.schema import ENTITY_KEY
    from features.store import open_store

    store = open_store(home, production, project=project)
    config = store.config
    key = EntityKey(join_keys=[ENTITY_KEY], entity_values=[Value(string_val=customer_id)])
    version = config.entity_key_serialization_version
    kind = config.online_store.type
    if kind == "sqlite":
        import sqlite3

        from feast.infra.online_stores.sqlite import _table_id

        path = Path(config.online_store.path)
        if not path.exists():
            return {"store": "sqlite", "rows": 0}
        binary = serialize_entity_key(key, entity_key_serialization_version=version)
        removed = 0
        with sqlite3.connect(path) as conn:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            for view in store.list_feature_views():
                table = _table_id(config.project, view)
                if table in present:
                    removed += conn.execute(
                        f'DELETE FROM "{table}" WHERE entity_key = ?', (binary,)
                    ).rowcount
        return {"store": "sqlite", "rows": removed}
    if kind == "redis":
        from feast.infra.online_stores.helpers import _redis_key
        from feast.infra.online_stores.redis import RedisOnlineStore

        client = RedisOnlineStore()._get_client(config.online_store)
        removed = int(client.delete(_redis_key(config.project, key, version)))
        return {"store": "redis", "keys": removed}
    raise RuntimeError(f"erasing online rows: Feast online store {kind!r} is not supported")
