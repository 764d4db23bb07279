"""notebooks/model_review.ipynb executed against the session's training run (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "model_review.ipynb"

pytestmark = pytest.mark.slow


def test_the_model_review_notebook_shows_every_model_against_its_baselines(
    trained, tracking_uri, monkeypatch, tmp_path
):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    for model in trained:
        assert model in text
    for scorer in ("rfm_logistic", "bgnbd", "bgnbd_gg", "historical_average", "open_rate"):
        assert scorer in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 9  # three plots per model at least
    assert "champion" in text and "first champion" in text
