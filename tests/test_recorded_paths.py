"""The JSON files record where they are, relative to the repository.

The committed results once named ``examples/results/...`` after they had
moved to ``examples/paper/results/`` (issue 26, part 5).
"""

from __future__ import annotations

import glob
import json
import os

from examples import cli

RESULTS = os.path.join(cli.REPOSITORY, "examples", "paper", "results")


def test_write_json_records_the_path_relative_to_the_repository(
  tmp_path, monkeypatch
):
  inside = os.path.join(cli.REPOSITORY, "examples", "paper", "results")
  monkeypatch.chdir(tmp_path)  # the flag as given depends on where one runs
  assert cli.recorded_path(os.path.join(inside, "x.json")) == os.path.join(
    "examples", "paper", "results", "x.json"
  )
  outside = tmp_path / "run.json"
  results = {"config": {"out": "run.json"}, "methods": {}}
  cli.write_json("run.json", results)
  assert json.loads(outside.read_text())["config"]["out"] == str(outside)
  assert results["config"]["out"] == "run.json"  # the caller's dict unchanged


def test_every_committed_result_names_its_own_file():
  paths = sorted(glob.glob(os.path.join(RESULTS, "*.json")))
  assert paths
  lm = os.path.join(cli.REPOSITORY, "examples", "lm", "results", "*.json")
  paths += sorted(glob.glob(lm))
  for path in paths:
    with open(path) as file:
      out = json.load(file).get("config", {}).get("out")
    if out is not None:
      assert out == os.path.relpath(path, cli.REPOSITORY), path
