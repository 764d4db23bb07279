"""Where feature tables and the Feast store live, and the environment the Feast YAML expands.

Feast expands ``${VAR}`` in ``feature_store*.yaml`` and needs absolute paths (the DuckDB offline
store resolves relative ones against the current directory, and `feast apply` changes into the
repo folder first), so everything here is resolved to an absolute path before Feast sees it.
The settings (NUDGE_HOME, NUDGE_FEAST_CONFIG, NUDGE_FEAST_REGISTRY_URL, NUDGE_REDIS_URL) are read
by their one definition in `nudge.settings`. Import-light: the standard library and that leaf.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from nudge.settings import SharedSettings, home_dir

__all__ = [
    "DEFAULT_REDIS",
    "REPO_DIR",
    "feast_dir",
    "feast_environment",
    "feature_store_yaml",
    "feature_table_path",
    "feature_tables_dir",
    "nudge_home",
    "production_selected",
    "redis_connection_string",
]

REPO_DIR = Path(__file__).resolve().parent
DEFAULT_REDIS = "127.0.0.1:6379"


def nudge_home(home: Path | str | None = None) -> Path:
    """The absolute $NUDGE_HOME: `home` if given, else the environment, else ./.nudge."""
    return home_dir(home)


def feature_tables_dir(home: Path | str | None = None) -> Path:
    """The folder of the feature tables the FileSources read: ``$NUDGE_HOME/features``."""
    return nudge_home(home) / "features"


def feature_table_path(view: str, home: Path | str | None = None) -> Path:
    """The Parquet file that holds one feature view's table."""
    return feature_tables_dir(home) / f"{view}.parquet"


def feast_dir(home: Path | str | None = None) -> Path:
    """The embedded store's folder (file registry, SQLite online store): ``$NUDGE_HOME/feast``."""
    return nudge_home(home) / "feast"


def production_selected(production: bool | None = None) -> bool:
    """`production` if given, else whether ``NUDGE_FEAST_CONFIG=production``."""
    if production is not None:
        return production
    return SharedSettings().feast_production_selected


def feature_store_yaml(production: bool | None = None) -> Path:
    """The Feast config file the selected configuration uses."""
    if production_selected(production):
        return REPO_DIR / "feature_store.production.yaml"
    return REPO_DIR / "feature_store.yaml"


def feast_environment(
    home: Path | str | None = None, production: bool | None = None
) -> dict[str, str]:
    """The variables the selected Feast YAML expands, with absolute paths and defaults filled in.

    Pass them to `os.environ.update` (or a subprocess's ``env``) before running the `feast` CLI.
    """
    env = {"NUDGE_HOME": str(nudge_home(home)), "NUDGE_FEAST_DIR": str(feast_dir(home))}
    if production_selected(production):
        settings = SharedSettings()
        registry = (settings.feast_registry_url or "").strip()
        if not registry:
            raise RuntimeError(
                "the production Feast config needs NUDGE_FEAST_REGISTRY_URL, e.g. "
                "postgresql+psycopg://postgres@127.0.0.1:5432/nudge"
            )
        env["NUDGE_FEAST_REGISTRY_URL"] = registry
        env["NUDGE_REDIS_URL"] = redis_connection_string(settings.redis_url)
    return env


def redis_connection_string(url: str | None) -> str:
    """Feast's Redis ``host:port[,db=N][,password=...][,ssl=true]`` from a ``redis://`` URL.

    A value that is not a URL is taken to be in Feast's form already; none gives 127.0.0.1:6379.
    """
    if not url or not url.strip():
        return DEFAULT_REDIS
    url = url.strip()
    if "://" not in url:
        return url
    parts = urlsplit(url)
    pieces = [f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"]
    database = parts.path.lstrip("/")
    if database:
        pieces.append(f"db={database}")
    if parts.password:
        pieces.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        pieces.append("ssl=true")
    return ",".join(pieces)


if __name__ == "__main__":
    # `eval "$(python -m features.paths)"` before `feast -c features plan|apply`: exports what the
    # selected Feast YAML expands and creates the store's folder (Feast makes only the last level).
    import shlex

    variables = feast_environment()
    Path(variables["NUDGE_FEAST_DIR"]).mkdir(parents=True, exist_ok=True)
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
