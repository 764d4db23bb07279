"""The service's routers: /v1 scores and models (API key), health and metrics (open)."""
