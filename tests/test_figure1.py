"""examples/paper/figure1.py: the paper's Figure 1 on digits, in seconds."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the examples need the [examples] extra")

# pylint: disable=g-import-not-at-top,wrong-import-position
from examples.paper import figure1

# After 2 epochs on digits (8 Adam steps) the MLP reaches about 0.5 test
# accuracy (chance is 0.1). At c = 0.05 the weights-only network's logits are
# the head's bias plus O(c) terms, and its accuracy measured 0.10; had the
# biases been scaled proportionally it would stay at the unscaled accuracy.
FACTORS = (0.05, 0.3, 1.0, 3.0, 20.0)
QUICK = ["--data", "digits", "--epochs", "2"]
QUICK += ["--factors", ",".join(map(str, FACTORS))]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp("figure1") / "figure1.json"
  returned = figure1.main([*QUICK, "--out-json", str(out)])
  with open(out) as file:
    written = json.load(file)
  assert written == json.loads(json.dumps(returned))
  return written


def test_json_has_every_key_and_one_value_per_factor(results):
  assert set(results) == {
    "config",
    "versions",
    "wall_time_s",
    "factors",
    "proportional_test_acc",
    "weights_only_test_acc",
    "proportional_max_rel_error",
    "base_test_acc",
  }
  assert results["factors"] == list(FACTORS)
  for key in ("proportional_test_acc", "weights_only_test_acc"):
    assert len(results[key]) == len(FACTORS)
  assert results["config"]["layers"] == ["hidden_0", "hidden_1", "head"]
  assert results["base_test_acc"] > 0.3  # Trained: chance is 0.1.


def test_proportional_scaling_keeps_every_prediction(results):
  base = results["base_test_acc"]
  assert results["proportional_test_acc"] == [base] * len(FACTORS)
  assert max(results["proportional_max_rel_error"]) < 1e-4


def test_weights_only_scaling_changes_the_function(results):
  base = results["base_test_acc"]
  unit = FACTORS.index(1.0)
  assert results["weights_only_test_acc"][unit] == base
  assert results["weights_only_test_acc"][0] < base - 0.2


def test_scale_params_multiplies_bias_by_the_cumulative_factor():
  layer = lambda: {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  params = {"a": layer(), "b": layer(), "c": layer()}
  layers = [("a",), ("b",), ("c",)]
  proportional = figure1.scale_params(params, layers, 2.0, proportional=True)
  weights_only = figure1.scale_params(params, layers, 2.0, proportional=False)
  for depth, name in enumerate("abc", start=1):
    np.testing.assert_allclose(proportional[name]["kernel"], 2.0)
    np.testing.assert_allclose(proportional[name]["bias"], 2.0**depth)
    np.testing.assert_allclose(weights_only[name]["kernel"], 2.0)
    np.testing.assert_allclose(weights_only[name]["bias"], 1.0)


def test_default_factors_are_geometric_with_one():
  factors = np.array(figure1.default_factors())
  assert len(factors) == figure1.NUM_FACTORS and 1.0 in factors
  np.testing.assert_allclose(factors[[0, -1]], [0.05, 20.0])
  np.testing.assert_allclose(np.diff(np.log(factors)), np.log(400) / 24)


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--factors", "0.1,0,10"], "--factors"),
    (["--factors", "-1"], "--factors"),
    (["--factors", "0.1,ten"], "--factors"),
    (["--epochs", "0"], "--epochs"),
    (["--out-json", "/no/such/folder/f.json"], "--out-json: the folder"),
    (["--out-png", "/no/such/folder/f.png"], "--out-png: the folder"),
  ],
)
def test_bad_flag_values_name_the_flag(flags, message):
  with pytest.raises(ValueError, match=message):
    figure1.parse_flags(flags)


def test_png_is_drawn(results, tmp_path):
  pytest.importorskip("matplotlib", reason="the [plots] extra draws the PNG")
  out = tmp_path / "figure1.png"
  figure1.plot(results, str(out))
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cnn_with_max_pooling_is_proportional_too():
  results = figure1.main(
    ["--data", "digits", "--model", "cnn", "--epochs", "1"]
    + ["--factors", "0.05,1,20"]
  )
  base = results["base_test_acc"]
  assert results["proportional_test_acc"] == [base] * 3
  assert max(results["proportional_max_rel_error"]) < 1e-4
  assert results["config"]["layers"] == ["conv1", "conv2", "fc1", "head"]
