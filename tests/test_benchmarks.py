"""The benchmark scripts run (in --quick mode) and their checks hold.

Timings are never asserted: numbers come from the scripts, run by hand
(benchmarks/RESULTS.md). These tests only keep the scripts from rotting and
check what does not depend on the machine: equal results of the rescalings,
that SWR keeps no param-sized buffer across steps, and what SWR does to
low-precision weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import eager_baseline
from benchmarks import hlo_passes
from benchmarks import low_precision
from benchmarks import optimizer_step
from benchmarks import train_step


def test_optimizer_step_quick_writes_ratios(tmp_path):
  """The script runs, donated and not; timings are smoke-checked only.

  The real check: the chained and the fused step that it times give the same
  params and state after a step (the 1M-param model's weights are about 0.04).
  """
  out = tmp_path / "step.json"
  optimizer_step.main(["--quick", "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  assert [r["donated"] for r in rows] == [True, False]
  assert all(r["deferred/adam"] > 0 and r["adam+swr/adam"] > 0 for r in rows)
  assert all(0 <= r["deferred_vs_chain_max_abs"] < 1e-6 for r in rows)


def test_eager_baseline_quick_checks_equal_params(tmp_path):
  out = tmp_path / "eager.json"
  eager_baseline.main(["--quick", "--out", str(out)])
  for row in json.loads(out.read_text())["rows"]:
    assert row["max_abs_difference"] < 1e-4


def test_swr_keeps_no_param_copy_across_steps(tmp_path):
  out = tmp_path / "hlo.json"
  hlo_passes.main(["--quick", "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  adam, swr = rows["adam"]["memory"], rows["adam+swr"]["memory"]
  # Outputs alias the donated inputs; SWR's state adds O(layers) bytes.
  assert 0 <= swr["alias"] - adam["alias"] < 4096 and adam["alias"] > 0
  assert 0 < swr["output"] - adam["output"] < 4096
  # swr alone, on zero updates, needs no param-sized temporary.
  assert rows["swr alone"]["memory"]["temp"] < 4096
  # Nor does the fused step, which also moves fewer words than the chain.
  fused = rows["adam+swr deferred"]
  assert fused["memory"]["temp"] < 4096 <= rows["adam+swr"]["memory"]["temp"]
  assert fused["words_per_param"] < rows["adam+swr"]["words_per_param"]
  assert fused["memory"]["peak"] <= 1.01 * adam["peak"]


def test_deep_compile_quick_measures_every_optimizer(tmp_path):
  """Smoke test for the timings; the memory figures are checked."""
  from benchmarks import deep_compile

  out = tmp_path / "deep.json"
  deep_compile.main(["--quick", "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  assert {r["optimizer"] for r in rows} == set(deep_compile.OPTIMIZERS)
  assert all(r["compile_vs_adam"] > 0 for r in rows)
  temp = {
    (r["depth"], r["optimizer"]): r["temp_bytes"]
    for r in rows
    if not r["train_step"]
  }
  for depth in deep_compile.QUICK_DEPTHS:
    # The chained step keeps every layer's update u; the fused one does not.
    assert temp[depth, "adam+swr deferred"] < temp[depth, "adam+swr"] / 2


def test_train_step_quick_runs_batch_norm_and_residual_models(tmp_path):
  """The script runs; its timings are smoke-checked only (full runs give
  the figures).

  CNN-BN covers the BatchNorm sync, the ViT the traced equations; the
  other zoo models take the same code path. The real check: the chained and
  the fused training steps that it times give the same params after a step,
  but for the attention key biases, whose gradient is rounding noise
  (``train_step.is_attention_key_bias``).
  """
  out = tmp_path / "train.json"
  train_step.main(["--quick", "--models=cnn_bn,transformer", "--out", str(out)])
  rows = json.loads(out.read_text())["rows"]
  assert [r["model"] for r in rows] == ["cnn_bn", "transformer"]
  assert all(min(r["seconds"].values()) > 0 for r in rows)
  assert all(0 <= r["deferred_vs_chain_max_abs"] < 1e-6 for r in rows), rows
  # Adam's first step on a zero-gradient leaf is at most the learning rate.
  assert rows[0]["deferred_vs_chain_key_bias_max_abs"] == 0.0  # none in cnn_bn
  assert rows[1]["deferred_vs_chain_key_bias_max_abs"] <= 2e-3


def test_norm_scaling_quick_steps_equal_the_plain_norms(tmp_path):
  """Timings smoke-checked; the scaled norm's steps equal the plain one's
  bit for bit, params and state (which holds the norms)."""
  from benchmarks import norm_scaling

  out = tmp_path / "norms.json"
  norm_scaling.main(["--quick", "--out", str(out)])
  (row,) = json.loads(out.read_text())["rows"]
  assert min(row["seconds"].values()) > 0
  assert row["scaled_vs_plain_max_abs"] == {
    "adam+swr": 0.0,
    "adam+swr deferred": 0.0,
  }


def test_low_precision_bfloat16_below_its_resolution_does_nothing(tmp_path):
  """What LowPrecisionWarning says (test_hostile.py), measured."""
  out = tmp_path / "low.json"
  low_precision.main(["--out", str(out)])
  rows = {r["coef"]: r for r in json.loads(out.read_text())["rows"]}
  # exact: ||W|| / n = 1 + (1 - coef) ** 100 after 100 steps from 2n.
  np.testing.assert_allclose(
    rows[1e-3]["float32"], rows[1e-3]["exact"], rtol=1e-4
  )
  # coef 1e-3 is below bf16's resolution (3.9e-3): the norm stays at 2n.
  assert rows[1e-3]["bfloat16"] == pytest.approx(2.0, abs=1e-3)
  # Above it, bf16 follows the exact shrinkage.
  np.testing.assert_allclose(
    rows[1e-2]["bfloat16"], rows[1e-2]["exact"], rtol=0.02
  )


def test_run_all_quick_names_the_device_and_runs_every_part(
  tmp_path, monkeypatch
):
  """Smoke test of the accelerator script, on this machine's CPU.

  The parts' own quick runs are the tests above; here the two cheapest run
  through run_all, which must record each and skip what the budget leaves.
  """
  from benchmarks import run_all

  every_part = run_all.parts(quick=True)
  assert [name for name, _, _ in every_part] == [
    "optimizer_step",
    "hlo_passes",
    "deep_compile",
    "train_step",
  ]
  monkeypatch.setattr(run_all, "parts", lambda quick: every_part[:2])
  summary = run_all.main(["--quick", "--out-dir", str(tmp_path)])
  assert summary["device"].startswith("cpu")
  assert set(summary["parts"]) == {"optimizer_step", "hlo_passes"}
  for part in summary["parts"].values():
    assert json.loads(open(part["json"]).read())["rows"]
  written = json.loads((tmp_path / "summary.json").read_text())
  assert written["parts"].keys() == summary["parts"].keys()
  # A spent budget skips what is left instead of overrunning.
  skipped = run_all.main(["--quick", "--budget=0", "--out-dir", str(tmp_path)])
  assert all("skipped" in part for part in skipped["parts"].values())
