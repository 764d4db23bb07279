"""The scoring service: FastAPI over Feast online features and MLflow champion models.

`serving.app.create_app(settings)` builds the app; `nudge serve` (or `python -m serving`) runs it.
Import-light on purpose: Feast and MLflow load when the service starts, not on import.
"""
