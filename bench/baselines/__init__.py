"""Clearly labelled baselines that the benchmarks measure nudge against, in the same run."""
