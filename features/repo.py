"""The objects `feast plan` / `feast apply` register when run on this folder.

Feast scans the folder's Python files and registers the Feast objects it finds at module level;
this is the one file that has any (see `definitions.py` for why). The feature tables are looked
for under ``$NUDGE_HOME/features``, so NUDGE_HOME must be absolute here: Feast changes into this
folder before importing. ``eval "$(python -m features.paths)"`` exports what the YAML needs.
"""

from __future__ import annotations

from features.definitions import build_definitions
from features.paths import feature_tables_dir
from nudge.settings import SharedSettings

# Read from the environment (the `feast` CLI runs in a process of its own), by the one rule.
_home = SharedSettings().home
if not _home.is_absolute():
    raise RuntimeError(
        f"NUDGE_HOME must be an absolute path when Feast reads this repo (got {str(_home)!r}); "
        'run `eval "$(python -m features.paths)"` first'
    )
_definitions = build_definitions(feature_tables_dir(_home))

# Feast registers the objects it finds among this module's attributes: one per source, view and
# service, whatever the model definitions (NUDGE_MODELS_DIR) declare.
customer = _definitions.entity
for _name, _source in _definitions.sources.items():
    globals()[f"{_name}_source"] = _source
for _view in _definitions.views:
    globals()[_view.name] = _view
for _service in _definitions.services:
    globals()[f"{_service.name}_service"] = _service
