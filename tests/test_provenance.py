"""Every result says what made it: code records, and reports that say when trials ran on different code."""

import shutil
import subprocess

from conftest import REPO
import pytest

from convnet.results import markdown
from convnet.rundir import provenance

GIT = shutil.which("git")


def git(directory, *args):
  subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True)


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_two_commits_give_different_code_records(tmp_path):
  checkout = tmp_path / "checkout"
  shutil.copytree(REPO / "src" / "convnet", checkout / "convnet", ignore=shutil.ignore_patterns("__pycache__"))
  git(checkout, "init", "-q")
  git(checkout, "add", ".")
  git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
  package = checkout / "convnet"
  first = {"source": provenance.source_digest(package), "git": provenance.git_state(package)}
  assert first["git"]["dirty"] is False and len(first["git"]["commit"]) == 40

  (package / "train.py").write_text((package / "train.py").read_text() + "\n# a change\n")
  dirty = {"source": provenance.source_digest(package), "git": provenance.git_state(package)}
  assert dirty["git"] == {"commit": first["git"]["commit"], "dirty": True}
  assert dirty["source"] != first["source"]

  git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
  second = {"source": provenance.source_digest(package), "git": provenance.git_state(package)}
  assert second["git"]["commit"] != first["git"]["commit"] and not second["git"]["dirty"]
  assert second["source"] == dirty["source"]  # the same files, committed


def test_outside_a_checkout_there_is_no_git_state_but_a_source_digest(tmp_path):
  copy = tmp_path / "site-packages" / "convnet"
  shutil.copytree(REPO / "src" / "convnet", copy, ignore=shutil.ignore_patterns("__pycache__"))
  assert provenance.git_state(copy) is None
  assert provenance.source_digest(copy) == provenance.source_digest(REPO / "src" / "convnet")


def test_code_record_names_the_ops_and_library_versions():
  record = provenance.code_record({"conv0": "ops.conv_relu_pool"})
  assert record["convnet"] and record["ops"] == {"conv0": "ops.conv_relu_pool"}
  assert {"python", "jax", "jaxlib", "flax", "optax", "orbax", "numpy"} <= set(record["versions"])
  assert "?" not in (record["versions"]["jax"], record["versions"]["flax"])


def trial(name, source, machine="m1", backend="cpu", sources=None):
  code = {"convnet": "0.1.0", "source": source, "git": None, "versions": {"jax": "0.10.2"}}
  return {
      "name": name, "configuration": name.split(",")[0], "status": "completed", "seed": 0, "test_accuracy": 0.9,
      "epoch_seconds": 1.0,
      "examples_per_second": 1.0, "num_params": 1, "flops_per_example": 1, "backend": backend, "device": "cpu:cpu",
      "machine": machine, "code": code, "code_sources": sources or [source],
  }  # fmt: skip


def test_report_warns_when_trials_ran_on_different_code_machines_or_backends():
  same = [trial("a,seed=0", "aaa"), trial("b,seed=0", "aaa")]
  assert provenance.differences(same) == []
  assert "**Warning:**" not in markdown.markdown({}, same)
  mixed = [trial("a,seed=0", "aaa"), trial("b,seed=0", "bbb", machine="m2", backend="gpu")]
  text = markdown.markdown({}, mixed)
  assert "the trials ran on 2 different code versions" in text and "source aaa" in text and "source bbb" in text
  assert "the trials ran on 2 different machines: m1 | m2" in text
  assert "the trials ran on 2 different backends" in text
  resumed = [trial("a,seed=0", "bbb", sources=["aaa", "bbb"]), trial("b,seed=0", "bbb")]
  assert provenance.differences(resumed) == [
    "1 trial(s) resumed across a code change, their epochs ran different code: a,seed=0"
  ]


def test_a_process_records_the_code_it_loaded_not_files_edited_since(monkeypatch):
  """A long sweep while someone edits the checkout: every trial records the code the process imported."""
  provenance._loaded.cache_clear()
  monkeypatch.setattr(provenance, "source_digest", lambda: "before")
  monkeypatch.setattr(provenance, "git_state", lambda: {"commit": "abc", "dirty": False})
  first = provenance.code_record()
  monkeypatch.setattr(provenance, "source_digest", lambda: "edited on disk since")
  assert provenance.code_record()["source"] == first["source"] == "before"
  provenance._loaded.cache_clear()
