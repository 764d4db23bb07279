"""Models: probabilistic and heuristic baselines (`models.baselines`) and shared metrics (`models.metrics`)."""
