"""The course lesson notebook runs top to bottom in a real Jupyter kernel, on a small slice of the data."""

from pathlib import Path

from conftest import REPO
from nbclient import NotebookClient
import nbformat
import pytest

pytestmark = pytest.mark.notebook

NOTEBOOK = REPO / "experiments" / "course_lesson" / "lesson.ipynb"


def outputs_text(cell) -> str:
  return "".join(o.get("text", "") + "".join(str(v) for v in o.get("data", {}).values()) for o in cell.outputs)


def test_the_lesson_runs_top_to_bottom_in_a_jupyter_kernel(real_data_dir, tmp_path):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  sweep_dir = (NOTEBOOK.parent / "../fashion_mnist_sweet_spot/default_grid").resolve()
  parameters.source = (
    f"NUM_TRAIN, NUM_TEST, EPOCHS = 512, 256, 1\nWORKDIR = {str(tmp_path / 'runs')!r}\nSWEEP_DIR = {str(sweep_dir)!r}"
  )
  NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                 ).execute()  # fmt: skip  # raises CellExecutionError on any cell's error
  code = [c for c in notebook.cells if c.cell_type == "code"]
  text = "\n".join(outputs_text(c) for c in code)
  assert "Total params: 243,786" in text
  assert "test accuracy" in text and "on all 256 test images after 1 epochs" in text
  assert "sweet spot: features=" in text
  figures = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
  assert len(figures) == 3  # activations, the sidebar, the Pareto plot
  assert (Path(tmp_path) / "runs" / "five_epochs" / "summary.json").is_file()


def test_the_committed_notebook_holds_a_full_data_run():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in code), "commit the notebook with the outputs of a run"
  assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
  (parameters,) = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert "NUM_TRAIN = None" in parameters.source and "EPOCHS = 5" in parameters.source  # all the data
  assert "on all 10,000 test images after 5 epochs" in "\n".join(outputs_text(c) for c in code)


def test_the_readmes_pareto_picture_is_the_committed_notebooks_pareto_cell():
  import base64

  cell = nbformat.read(NOTEBOOK, as_version=4).cells[-1]
  assert "pareto_figure()" in cell.source
  picture = NOTEBOOK.with_name("pareto_cell.png").read_bytes()
  assert base64.b64decode(cell.outputs[0].data["image/png"]) == picture
