"""Optimizer: deterministic experiment assignment and the statistics that judge experiments.

``stats`` holds the pure statistical functions, ``assignment`` the hash bucketing and holdouts,
``arms`` the per-arm CSV analysis behind ``nudge experiment analyze``, ``analyses`` the funnel,
timing, segmentation and holdout analyses of exposure frames and the guarded recommendation.
"""
