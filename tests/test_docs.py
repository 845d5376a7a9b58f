"""The README's code and the demo run as written."""

from __future__ import annotations

import pathlib
import re

import optax
import pytest

import optax_swr

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
  text = (ROOT / "README.md").read_text()
  return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_code_blocks_run_in_order(capsys):
  blocks = readme_python_blocks()
  assert len(blocks) >= 3
  namespace = {"optax": optax, "optax_swr": optax_swr}
  for block in blocks:
    exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  # The Linen snippet prints one weight norm per layer; the NNX one trains.
  assert namespace["optimizer"].opt_state is not None
  printed = capsys.readouterr().out
  assert len(re.findall(r"\d+\.\d+", printed)) == 3


def test_demo_quick_run_prints_both_methods(capsys):
  pytest.importorskip("sklearn", reason="the demo needs the [examples] extra")
  from examples import digits_demo

  digits_demo.main(["--quick"])
  printed = capsys.readouterr().out
  rows = re.findall(
      r"^(vanilla|SWR)\s+(warm start|from scratch)\s+([01]\.\d{4}) \+-",
      printed, flags=re.MULTILINE)
  assert {(m, p) for m, p, _ in rows} == {
      (m, p) for m in ("vanilla", "SWR") for p in ("warm start", "from scratch")}
  # Two epochs already beat chance (0.1) by far on digits.
  assert all(float(acc) > 0.5 for _, _, acc in rows)
