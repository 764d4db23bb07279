"""`python -m serving`: the scoring service on NUDGE_SERVE_HOST:NUDGE_SERVE_PORT."""

import os

# One OpenMP thread per prediction: the service parallelises across requests (see serve_cli).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from serving.app import main

main()
