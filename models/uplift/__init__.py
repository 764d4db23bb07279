"""Uplift modelling: who buys *because of* the message, learned from randomized experiments.

``metrics`` (Qini, uplift at k, ATE: scikit-uplift's definitions), ``learners`` (estimators with
scikit-learn's API, ``fit(X, treatment, y)``) and ``backtest`` (repeated stratified splits of a
bring-your-own experiment, behind ``nudge uplift backtest``).
"""
