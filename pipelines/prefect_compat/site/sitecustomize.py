"""Loaded by every Python started with this folder on PYTHONPATH (Prefect's server subprocesses):
installs nudge's FastAPI compatibility hook for Prefect 3.8 (see pipelines.prefect_compat)."""

try:
    from pipelines.prefect_compat import install
except ImportError:  # not nudge's environment: nothing to do
    pass
else:
    install()
