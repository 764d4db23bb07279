"""The baselines package re-exports its public names without importing every stack up front."""

import subprocess
import sys

import models.baselines as baselines


def test_every_exported_name_resolves():
    for name in baselines.__all__:
        assert getattr(baselines, name).__name__ == name


def test_importing_bgnbd_does_not_import_scikit_learn():
    code = "import sys, models.baselines.bgnbd; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
