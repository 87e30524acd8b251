"""The train step, metrics, full-test-set scoring, batching, config checks, NaN and stop_at."""

import json
import math

from conftest import make_images, tiny_config
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convnet import batching, steps, train
from convnet.errors import ConfigError, TrainingError

SEED_CONFIG = {
  "model": {
    "features": (64, 64),
    "kernel_size": 3,
    "padding": "VALID",
    "pool_size": 2,
    "dense_features": (128,),
    "ops": "fast",
  },
  "optimizer": "adam",
  "learning_rate": 1e-3,
}


def fixed_batch(n=32, seed=3):
  images, labels = make_images(n, seed=seed)
  return {"image": jnp.asarray(images[..., None]), "label": jnp.asarray(labels, jnp.int32)}


def test_one_train_step_golden_and_finite():
  state = steps.create_train_state(jax.random.PRNGKey(0), SEED_CONFIG, (28, 28, 1), 10)
  batch = fixed_batch()
  new_state, metrics = steps.train_step(state, batch)
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(new_state.params))
  assert int(new_state.step) == 1
  loss = float(metrics["loss_sum"]) / 32
  accuracy = float(metrics["correct"]) / 32
  assert loss >= 0 and 0 <= accuracy <= 1
  # Golden values for seed 0, conftest.make_images(32, seed=3), Adam 1e-3. If a deliberate change
  # (init, loss, scaling, op numerics) moves them, check that training still reaches the README's
  # accuracy on real data, then update the numbers here; an unexplained change is a bug.
  assert loss == pytest.approx(2.2746188640594482, rel=1e-4)
  after = float(steps.eval_step(new_state, batch)["loss_sum"]) / 32
  assert after == pytest.approx(1.9537993669509888, rel=1e-4)
  assert after < loss  # the step went downhill


def test_compute_metrics_against_hand_computed_values():
  logits = jnp.asarray([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0]])
  labels = jnp.asarray([0, 2, 2, 1])
  mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # the last example is padding

  def ce(row, label):
    return -(row[label] - math.log(sum(math.exp(v) for v in row)))

  rows = np.asarray(logits).tolist()
  expected_loss = ce(rows[0], 0) + ce(rows[1], 2) + ce(rows[2], 2)
  metrics = steps.compute_metrics(logits, labels, mask)
  assert float(metrics["loss_sum"]) == pytest.approx(expected_loss, rel=1e-6)
  assert float(metrics["correct"]) == 2.0 and float(metrics["count"]) == 3.0
  assert steps.summarize(metrics) == pytest.approx({"loss": expected_loss / 3, "accuracy": 2 / 3})


class FixedLogits:
  """A fake model: logits say 'class 0' for even and 'class 1' for odd first pixels."""

  @staticmethod
  def apply(variables, images):
    odd = (images[:, 0, 0, 0] % 2).astype(jnp.float32)
    return jnp.stack([1.0 - odd, odd], axis=-1) * 4.0


def test_evaluate_scores_every_example_when_the_batch_does_not_divide():
  n = 103
  images = np.zeros((n, 4, 4, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(n)
  labels = np.zeros(n, np.int32)  # only the even images (52 of 103) are right
  state = steps.TrainState.create(
    apply_fn=FixedLogits.apply, params={"w": jnp.zeros(1)}, tx=steps.make_optimizer(SEED_CONFIG)
  )
  for batch_size in (10, 103, 500):
    result = steps.evaluate(state, images, labels, batch_size=batch_size)
    assert result["accuracy"] == pytest.approx(52 / 103)
    expected_loss = (52 * math.log(1 + math.exp(-4)) + 51 * math.log(1 + math.exp(4))) / 103
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_batch_layout_pads_and_masks_the_last_batch():
  indices, mask = batching.batch_layout(7, 3)
  np.testing.assert_array_equal(indices, [[0, 1, 2], [3, 4, 5], [6, 0, 0]])
  np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 1], [1, 0, 0]])


def test_shuffled_batches_are_a_permutation_that_changes_with_the_key():
  a, mask = batching.shuffled_batches(jax.random.PRNGKey(0), 10, 4)
  b, _ = batching.shuffled_batches(jax.random.PRNGKey(1), 10, 4)
  valid = np.asarray(a)[np.asarray(mask) > 0]
  assert sorted(valid.tolist()) == list(range(10)) and a.shape == (3, 4)
  assert not np.array_equal(a, b)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("num_epochs", 0, "num_epochs=0 is not allowed; use an int >= 1"),
    ("batch_size", -2, "batch_size=-2 is not allowed"),
    ("learning_rate", 0.0, "learning_rate=0.0 is not allowed; use a finite number > 0"),
    ("learning_rate", float("nan"), "learning_rate=nan is not allowed"),
    ("optimizer", "lion", "optimizer='lion' is not allowed; use one of ('adam', 'sgd')"),
    ("stop_at", 1.5, "stop_at=1.5 is not allowed"),
  ],
)
def test_bad_training_values_are_refused(idx_dir, tmp_path, field, value, message):
  config = tiny_config(idx_dir, **{field: value})
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "summary.json").exists()


def test_nan_loss_stops_the_run_with_status_failed(idx_dir, tmp_path):
  config = tiny_config(idx_dir, optimizer="sgd", learning_rate=1e12, momentum=0.0, num_epochs=3)
  with pytest.raises(TrainingError, match="NaN/inf training loss in epoch 1"):
    train.train_and_evaluate(config, str(tmp_path))
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "failed" and "NaN" in summary["error"]
  assert not (tmp_path / "metrics.jsonl").exists()  # nothing from the broken epoch was logged


def test_stop_at_ends_training_once_train_accuracy_reaches_it(idx_dir, tmp_path):
  config = tiny_config(idx_dir, stop_at=0.3, num_epochs=20, learning_rate=3e-3, checkpoint=False, tensorboard=False)
  summary = train.train_and_evaluate(config, str(tmp_path))
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert summary["stopped_early"] and "reached stop_at=0.3" in summary["stop_reason"]
  assert summary["epoch"] == len(lines) < 20
  assert json.loads(lines[-1])["train_accuracy"] >= 0.3
  assert all(json.loads(line)["train_accuracy"] < 0.3 for line in lines[:-1])
