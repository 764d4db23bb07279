"""Prefect flows: `build_features`, `train` (with its `fit_models` subflow), `backtest`, and the
deployments that schedule them (`deploy`).

Importing a flow module imports Prefect: call `pipelines.prefect_env.configure_prefect` first.
"""
