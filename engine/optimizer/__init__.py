"""Optimizer: deterministic experiment assignment and the statistics that judge experiments.

``stats`` holds the pure statistical functions, ``assignment`` the hash bucketing and holdouts,
``labels`` the names of the holdout arm and of pooled rows, ``arms`` the per-arm CSV analysis
behind ``nudge experiment analyze``. The analyses of exposure frames, one module each: the frame
``contract``, shared ``comparisons``, ``funnel``, ``timing``, ``segmentation``, ``holdout``
incrementality and the guarded ``recommendation``; ``experiment.analyse_experiment`` runs them all
for one experiment, and ``analyses`` gathers them under one name.
"""
