"""The notebooks under notebooks/, executed (nbclient) against the end-to-end run's lake, and
stored as they should be: without outputs, importing crm_spark, defining no logic of their own.

One kernel runs the three in turn (its namespace reset before each), so they share one JVM as a
user's Jupyter kernel would."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from conftest import E2E_END

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ("01_explore_customers.ipynb", "02_segments_and_rules.ipynb", "03_churn_and_value.ipynb")


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_notebooks_are_stored_without_outputs_and_import_the_package() -> None:
    assert tuple(p.name for p in NOTEBOOKS) == EXPECTED
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} is stored with outputs"
        source = "\n".join(_code(path))
        assert "from crm_spark.session import build_session" in source and "open_lake(" in source
        # Exploration only: a function or class a job needs belongs in crm_spark.
        assert "\ndef " not in f"\n{source}" and "\nclass " not in f"\n{source}", f"{path.name} defines logic"


def _text(outputs: list) -> str:
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_the_notebooks_run_against_a_finished_run(e2e, tmp_path: Path) -> None:
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    env = {**os.environ, "CRM_SPARK_LAKE": e2e.lake.root, "CRM_SPARK_RAW": str(e2e.raw),
           "CRM_SPARK_ENV": "local", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(ROOT / "notebooks"), env=env)
    executed = {}
    try:
        for path in NOTEBOOKS:
            notebook = nbformat.read(path, as_version=4)
            notebook.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))
            NotebookClient(notebook, km=km, timeout=300, allow_errors=False).execute()
            executed[path.name] = notebook
            nbformat.write(notebook, tmp_path / path.name)
    finally:
        km.shutdown_kernel(now=True)

    for name, notebook in executed.items():
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        assert f"latest as-of date {E2E_END}" in _text(outputs), name
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(figures) >= 2, f"{name} drew {len(figures)} figures"

    first = _text([o for c in executed[EXPECTED[0]].cells for o in c.get("outputs", [])])
    assert "gold.customer_features" in first and "silver.orders" in first
    # The last cell's table has a column per stage whose MLflow run of the date was found.
    tables = [o["data"]["text/plain"] for o in executed[EXPECTED[2]].cells[-1].outputs
              if o.get("output_type") == "execute_result"]
    assert tables and tables[0].splitlines()[0].split() == ["segment", "churn", "recommend", "clv"], tables
