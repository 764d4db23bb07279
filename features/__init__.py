"""Features: the Feast repo (definitions, feature_store*.yaml, `store`) and `compute`, the
feature tables and labels computed from the event lake.

Importing this package, `features.compute` or `features.store` never imports Feast.
"""
