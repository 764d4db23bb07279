"""Pipelines: the simulator, ingestion of external data, and (lazily imported) Prefect flows.

Importing this package stays light: Prefect, Feast and MLflow are imported only inside flows.
"""
