"""notebooks/uplift_review.ipynb executed end to end on its small simulation (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "uplift_review.ipynb"

pytestmark = pytest.mark.slow


def test_the_uplift_review_notebook_shows_qini_curves_the_policy_table_and_what_was_learned(
    tmp_path, monkeypatch
):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NUDGE_HOME", str(tmp_path / "home"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "registered uplift_cart_uplift v1" in text
    assert "send to all" in text and "uplift: top 30%" in text
    for kind in ("persuadable", "sleeping_dog"):
        assert kind in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the Qini curves at least
