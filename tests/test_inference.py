"""Inference: speed recorded by every run, predictions on pictures, and an exported model that needs only jax."""

import json
import os
import subprocess
import sys

from conftest import REPO, sweep_config, tiny_config
import numpy as np
from PIL import Image
import pytest

from convnet import configuration, export, inference, input_pipeline, predict, train, trained
from convnet.errors import ConfigError, DataError
from convnet.results import analysis, report, speeds
from convnet.sweep import driver


@pytest.fixture(scope="module")
def run(idx_dir, tmp_path_factory):
  """A trained run on the fixture data, its summary, and its test images."""
  workdir = tmp_path_factory.mktemp("run")
  summary = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=2, tensorboard=False, **MEASURED), str(workdir))
  return workdir, summary, input_pipeline.get_datasets(tiny_config(idx_dir).dataset.to_dict())


MEASURED = {"inference.seconds": 0.02, "inference.batch_size": 64}  # measured, briefly


def module(*args, cwd=REPO):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_run_records_its_batch_1_latency_and_throughput_on_its_device(run):
  _, summary, _ = run
  assert 0 < summary["latency_ms"] <= summary["latency_p90_ms"]
  assert summary["throughput"] > 0 and summary["throughput_batch"] == 64
  assert summary["inference_device"] == "cpu:cpu"
  assert min(summary["inference_calls"].values()) >= inference.MIN_CALLS
  assert 0 < summary["inference_seconds"] < summary["total_seconds"]
  assert summary["param_bytes"] == 4 * summary["num_params"]  # float32 parameters


def test_inference_seconds_0_measures_nothing_and_bad_settings_are_one_line(idx_dir, tmp_path):
  summary = train.train_and_evaluate(
    tiny_config(idx_dir, num_epochs=1, tensorboard=False, checkpoint=False, **{"inference.seconds": 0.0}), str(tmp_path)
  )
  assert not set(inference.FIELDS) & set(summary)
  for field, value, allowed in (("seconds", -1.0, "seconds >= 0"), ("batch_size", 0, "images >= 1")):
    config = tiny_config(idx_dir, **{f"inference.{field}": value}).to_dict()
    with pytest.raises(ConfigError, match=f"inference.{field}={value!r}: give .*{allowed}"):
      configuration.check_config(config)


@pytest.fixture(scope="module")
def pictures(run, tmp_path_factory):
  """Test images written as PNGs, one of them also inverted (dark on light) and one as a large colour JPEG."""
  _, _, data = run
  folder = tmp_path_factory.mktemp("pictures")
  paths = []
  for i in range(6):
    paths.append(folder / f"test{i}.png")
    Image.fromarray(data.test_images[i, :, :, 0]).save(paths[-1])
  Image.fromarray(255 - data.test_images[0, :, :, 0]).save(folder / "inverted.png")
  Image.fromarray(255 - data.test_images[0, :, :, 0]).resize((112, 112)).convert("RGB").save(folder / "large.jpg")
  return folder, paths


def test_predict_classifies_test_images_written_as_pngs_as_the_network_does(run, pictures):
  workdir, _, data = run
  folder, paths = pictures
  network = trained.load(workdir)
  expected = inference.logits(network.model, network.params, data.test_images[:6]).argmax(axis=1)
  about, answers = predict.predict(str(workdir), [str(p) for p in paths], top=2)
  assert str(workdir) in about and "epoch 2" in about
  assert [network.class_names.index(best[0][0]) for _, best, _ in answers] == expected.tolist()
  assert all(len(best) == 2 and best[0][1] >= best[1][1] and not flipped for _, best, flipped in answers)
  prepared, flipped = predict.prepare(paths[0], network.image_shape)
  assert not flipped and np.array_equal(prepared, data.test_images[0])  # a picture of the data's look passes unchanged


def test_a_light_background_is_inverted_to_the_same_class_and_any_size_or_colour_is_fitted(run, pictures):
  workdir, _, data = run
  folder, paths = pictures
  _, answers = predict.predict(str(workdir), [str(paths[0]), str(folder / "inverted.png"), str(folder / "large.jpg")])
  (_, plain, was), (_, inverted, flipped), (_, large, large_flipped) = answers
  assert not was and flipped and large_flipped
  assert inverted == plain  # the same picture: the same classes and probabilities
  image, _ = predict.prepare(folder / "inverted.png", (28, 28, 1))
  assert np.array_equal(image, data.test_images[0])
  image, _ = predict.prepare(folder / "large.jpg", (28, 28, 1))
  assert image.shape == (28, 28, 1) and image.dtype == np.uint8
  assert predict.prepare(folder / "inverted.png", (28, 28, 1), invert="no")[1] is False


def test_a_picture_of_another_size_is_trimmed_to_its_object_fitted_and_centred(tmp_path):
  canvas = np.full((60, 100), 255, np.uint8)  # a photo: a dark 30x20 object on white, off centre
  canvas[15:35, 40:70] = 0
  Image.fromarray(canvas).convert("RGB").save(tmp_path / "photo.png")
  image, flipped = predict.prepare(tmp_path / "photo.png", (28, 28, 1))
  rows, cols = np.nonzero(image[:, :, 0] > 128)
  assert flipped and image.shape == (28, 28, 1)
  assert (cols.min(), cols.max()) == (0, 27)  # its longer side fills the frame, as Fashion-MNIST's objects do
  assert rows.max() - rows.min() + 1 == 19 and abs((rows.min() + rows.max()) / 2 - 13.5) <= 0.5  # 20 x 28/30, centred
  assert image[0, 0, 0] < 32 and image[27, 0, 0] < 32  # the rest is its (inverted) background


@pytest.mark.slow
def test_predict_names_a_bad_picture_and_prints_each_pictures_classes(run, pictures, tmp_path):
  workdir, _, _ = run
  folder, paths = pictures
  (tmp_path / "notes.png").write_text("not a picture")
  with pytest.raises(DataError, match=r"notes.png: not a picture Pillow can read"):
    predict.predict(str(workdir), [str(paths[0]), str(tmp_path / "notes.png")])
  with pytest.raises(DataError, match=r"missing.png: no such file"):
    predict.predict(str(workdir), [str(tmp_path / "missing.png")])
  done = module("-m", "convnet.predict", f"--workdir={workdir}", str(paths[1]), str(folder / "inverted.png"))
  assert done.returncode == 0, done.stderr
  lines = done.stdout.splitlines()
  assert lines[1].startswith(f"{paths[1]}: ") and lines[1].count("%") == 3
  assert lines[2].startswith(f"{folder / 'inverted.png'}: ") and lines[2].endswith("(inverted: light background)")
  bad = module("-m", "convnet.predict", f"--workdir={workdir}", str(tmp_path / "notes.png"))
  assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
    f"error: {tmp_path / 'notes.png'}: not a picture Pillow can read (cannot identify image file "
    f"'{tmp_path / 'notes.png'}')"
  ]


CALL = """
import json, sys
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
images = np.load(sys.argv[2])
logits = [np.asarray(exported.call(images[:1])), np.asarray(exported.call(images))]  # two batch sizes, one artifact
np.save(sys.argv[3], np.concatenate(logits))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("convnet", "flax", "optax", "orbax"))))
"""


@pytest.mark.slow
def test_an_exported_model_gives_convnets_logits_in_a_process_with_only_jax_and_numpy(run, tmp_path):
  workdir, summary, data = run
  written = export.export(str(workdir), str(tmp_path / "model.jax"), platforms=("cpu",))
  assert written == [tmp_path / "model.jax", tmp_path / "model.json"]
  meta = json.loads((tmp_path / "model.json").read_text())
  assert meta["class_names"] == list(data.class_names) and meta["input"]["shape"] == [None, 28, 28, 1]
  assert meta["epoch"] == 2 and meta["test_accuracy"] == summary["test_accuracy"] and meta["platforms"] == ["cpu"]
  images = (data.test_images[:5] / np.float32(255)).astype(np.float32)
  np.save(tmp_path / "images.npy", images)
  script = tmp_path / "call.py"
  script.write_text(CALL)
  done = module(str(script), str(tmp_path / "model.jax"), str(tmp_path / "images.npy"), str(tmp_path / "out.npy"),
                cwd=tmp_path)  # fmt: skip
  assert done.returncode == 0, done.stderr
  assert json.loads(done.stdout) == []  # neither convnet nor Flax was imported
  network = trained.load(workdir)
  expected = inference.logits(network.model, network.params, data.test_images[:5])
  got = np.load(tmp_path / "out.npy")
  np.testing.assert_allclose(got[:1], expected[:1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[1:], expected, rtol=1e-5, atol=1e-5)


def test_export_refuses_a_json_out_path_and_unknown_platforms(run, tmp_path):
  workdir, _, _ = run
  with pytest.raises(ConfigError, match=r"--out=.*model.json: the artifact needs another name"):
    export.export(str(workdir), str(tmp_path / "model.json"))
  with pytest.raises(ConfigError, match="--platforms=gpu is not allowed; use some of cpu, cuda, rocm, tpu"):
    export.export(str(workdir), str(tmp_path / "model.jax"), platforms=("gpu",))
  assert not list(tmp_path.iterdir())


def record(name, seed, accuracy, seconds, latency, flops):
  return {
      "name": f"{name},seed={seed}", "configuration": name, "overrides": {"model.features": name, "seed": seed},
      "seed": seed, "status": "completed", "validation_accuracy": accuracy, "test_accuracy": accuracy,
      "epoch_seconds": seconds, "latency_ms": latency, "latency_p90_ms": 1.2 * latency, "throughput": 1e3 / latency,
      "num_params": int(flops / 10), "flops_per_example": flops, "flatten_size": 100, "backend": "cpu",
      "device": "cpu:cpu", "machine": "test machine", "epoch": 1, "examples_per_second": 1.0,
  }  # fmt: skip


# "wide" trains fast but infers slowly (say, many filters on a small map); "deep" the other way round.
SPEED_RECORDS = [
  record(name, seed, accuracy + 0.001 * seed, seconds * (1 + 0.01 * seed), latency * (1 + 0.01 * seed), flops)
  for name, accuracy, seconds, latency, flops in (("wide", 0.90, 2.0, 4.0, 8e6), ("deep", 0.90, 8.0, 1.0, 2e6))
  for seed in range(3)
]


@pytest.mark.parametrize(
  ("speed", "picked", "shown"),
  [("train_time", "wide", "2.02 s/epoch"), ("latency", "deep", "1.010 ms"), ("throughput", "deep", "990 images/s"),
   ("flops", "deep", "2.00 MFLOP"), ("params", "deep", "200,000 params")],
)  # fmt: skip
def test_report_speed_chooses_what_fast_means_and_the_report_shows_the_answer_under_each(
  tmp_path, speed, picked, shown
):
  config = {"num_epochs": 1, "sweep": {"report": {"rule": "exchange_rate", "speed": speed}}}
  done = report.write_report(tmp_path, config, SPEED_RECORDS)
  assert done.sweet_spot.name == picked and done.answer.sweet_spot == picked
  assert f"fast = `sweep.report.speed={speed}`" in done.text and shown in done.text
  each = [line for line in done.text.splitlines() if line.startswith(tuple(f"| `{s}`" for s in speeds.SPEEDS))]
  assert [line.split(" | ")[1] for line in each] == ["wide", "deep", "deep", "deep", "deep"]
  assert f"`{speed}` (this report)" in "\n".join(each) and "it depends on what fast means" in done.text
  answer = json.loads((tmp_path / "answer.json").read_text())
  assert answer["sweet_spot"] == picked and speeds.SPEEDS[speed][1] in answer["rule_text"]


def test_a_speed_not_recorded_is_one_error_and_is_listed_as_such(tmp_path):
  old = [{k: v for k, v in r.items() if k not in ("latency_ms", "throughput")} for r in SPEED_RECORDS]
  text = report.write_report(tmp_path, {"num_epochs": 1}, old).text
  assert "| `latency`: batch-1 inference latency | not recorded (`latency_ms`) | - | - |" in text
  with pytest.raises(DataError, match=r"sweep.report.speed=latency: wide has no latency_ms recorded"):
    report.write_report(tmp_path, {"num_epochs": 1, "sweep": {"report": {"speed": "latency"}}}, old)
  with pytest.raises(ConfigError, match=r"sweep.report.speed='fast' is not allowed; use one of \('train_time'"):
    analysis.check_rule({"speed": "fast"})


def test_a_sweep_directory_answers_with_its_sweet_spots_trial_and_refuses_speeds_it_cannot_decide(idx_dir, tmp_path):
  fields = {"sweep.axes.features": ((4, 4), (6, 6)), "sweep.axes.seeds": (0, 1), **MEASURED}
  for bad, message in (
    (
      {"sweep.report.speed": "latency", "sweep.prune.method": "pareto"},
      "pruning and racing decide on seconds per epoch",
    ),
    ({"sweep.report.speed": "throughput", "inference.seconds": 0.0}, "needs inference measured: inference.seconds > 0"),
  ):
    with pytest.raises(ConfigError, match=message):
      driver.run(sweep_config(idx_dir, **{**fields, **bad}), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written
  done = driver.run(sweep_config(idx_dir, **fields, **{"sweep.report.speed": "latency"}), tmp_path / "sweep")
  lines = [json.loads(line) for line in (tmp_path / "sweep" / "results.jsonl").read_text().splitlines()]
  assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in lines if r["status"] == "completed")
  spot = done.answer.sweet_spot
  found = trained.find(tmp_path / "sweep")
  assert found.workdir == tmp_path / "sweep" / "trials" / f"{spot},seed=0" and spot in found.why
  other = next(r["configuration"] for r in lines if r["configuration"] != spot)
  assert trained.find(tmp_path / "sweep", other).workdir.name == f"{other},seed=0"
  assert trained.find(tmp_path / "sweep", f"{other},seed=1").workdir.name == f"{other},seed=1"
  with pytest.raises(DataError, match=r"--trial=features=9: no such trial or configuration .* \(features="):
    trained.find(tmp_path / "sweep", "features=9")
  with pytest.raises(DataError, match=r"is a single run, not a sweep directory"):
    trained.find(found.workdir, "features=9")
