"""vmap over seeds gives each seed exactly the run it would have had alone."""

from conftest import tiny_config
import jax
import pytest

from convnet import input_pipeline, programs, steps


@pytest.mark.slow
def test_seeds_in_lockstep_match_separate_runs(idx_dir):
  config = tiny_config(idx_dir, steps_per_call=0, **{"dataset.validation_size": 60}).to_dict()
  data = input_pipeline.get_datasets(config["dataset"])
  program = programs.SeedsProgram(config, data, seeds=(0, 3))
  together = [(program.train_epoch(epoch), program.evaluate()) for epoch in (1, 2)]
  for position, seed in enumerate((0, 3)):
    init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(seed))
    state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
    alone = programs.EpochProgram(state, data, config, shuffle_rng)
    for epoch, (train_metrics, test_metrics) in zip((1, 2), together, strict=True):
      state, metrics = alone.train_epoch(state, epoch)
      assert train_metrics[position]["loss"] == pytest.approx(metrics["loss"], rel=1e-4)
      scored = alone.evaluate(state)
      assert set(scored) == {"validation_loss", "validation_accuracy", "test_loss", "test_accuracy"}
      for split, count in (("validation", 60), ("test", 103)):
        assert test_metrics[position][f"{split}_loss"] == pytest.approx(scored[f"{split}_loss"], rel=1e-4)
        assert test_metrics[position][f"{split}_accuracy"] == pytest.approx(
          scored[f"{split}_accuracy"], abs=1 / count + 1e-9
        )
  assert together[1][1][0] != together[1][1][1]  # different seeds, different models


def test_seeds_must_be_distinct(idx_dir):
  config = tiny_config(idx_dir).to_dict()
  data = input_pipeline.get_datasets(config["dataset"])
  with pytest.raises(ValueError, match="must be distinct"):
    programs.SeedsProgram(config, data, seeds=(1, 1))
