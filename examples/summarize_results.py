"""Writes the tables of examples/RESULTS.md from the protocols' JSON files.

Final test accuracy (mean +- std over seeds) of every method in every
setting, and the final sum of layer weight norms; tables are generated,
never typed. With ``--write FILE`` the text between the markers
``<!-- tables:begin -->`` and ``<!-- tables:end -->`` of FILE is replaced.

  python examples/summarize_results.py examples/results/*.json --write examples/RESULTS.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os
import re

import numpy as np

BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
PROTOCOL_TITLES = {
  "warm_start": "Warm start (half the data, then all of it)",
  "continual_full": "Continual learning, full access (stage k: chunks 1..k)",
  "continual_limited": "Continual learning, limited access (stage k: chunk k)",
  "generalization": "Generalization (all the data, constant learning rate)",
  "generalization_lr_decay": "Generalization with lr / 10 at 50% and 75%",
}


def load(paths: Sequence[str]) -> list[dict]:
  results = []
  for path in sorted(paths):
    with open(path) as file:
      result = json.load(file)
    config = result["config"]
    key = config["protocol"] + ("_lr_decay" if config.get("lr_decay") else "")
    result["table"] = key
    result["column"] = (
      f"{config['data']} {config['model']}, {config['epochs']} ep"
    )
    if os.path.basename(path).startswith("sweep_"):  # SWR coefficient sweep
      coef = config["coefs"]["swr"][0]
      result["methods"] = {f"swr λ={coef:g}": result["methods"]["swr"]}
    results.append(result)
  return results


def accuracy_cell(entry: dict) -> str:
  final = np.array(entry["final_test_acc"])
  return f"{final.mean():.4f} ± {final.std():.4f}"


def norm_cell(entry: dict) -> str:
  norms = np.array([seed[-1] for seed in entry["weight_norms"]]).sum(axis=-1)
  return f"{norms.mean():.1f}"


def table(results: list[dict], cell) -> list[str]:
  """Methods down, settings across; sweep runs join their setting's column."""
  columns = list(dict.fromkeys(r["column"] for r in results))
  methods = sorted(
    dict.fromkeys(m for r in results for m in r["methods"]), key=_order
  )
  entries = {
    (r["column"], m): e for r in results for m, e in r["methods"].items()
  }
  lines = [
    "| method | " + " | ".join(columns) + " |",
    "|---|" + "---|" * len(columns),
  ]
  for method in methods:
    cells = [
      cell(entries[c, method]) if (c, method) in entries else ""
      for c in columns
    ]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return lines


def _order(method: str) -> tuple[int, str]:
  """Baselines first, then SWR, its sweep (by coefficient), the reference."""
  known = ("vanilla", "l2", "l2_init", "snp", "head_reset", "swr", "swr_reinit")
  if method in known:
    return known.index(method), ""
  if method.startswith("swr λ="):
    return len(known), f"{float(method.split('=')[1]):+.0e}"
  return len(known) + 1, method


def setting_line(results: list[dict]) -> str:
  parts = []
  for r in results:
    if any(m.startswith("swr λ=") for m in r["methods"]):
      continue
    c = r["config"]
    minutes = sum(sum(e["seconds"]) for e in r["methods"].values()) / 60
    parts.append(
      f"{r['column']}: {c['epochs']} epochs per phase, {c['seeds']} seeds, "
      f"{c['num_train']} train / {c['num_test']} test, SWR (λ_f, λ_c) = "
      f"{tuple(c['coefs']['swr'])}, {minutes:.1f} min"
    )
  return "Settings: " + "; ".join(parts) + "."


def markdown(results: list[dict]) -> str:
  lines = []
  for key, title in PROTOCOL_TITLES.items():
    group = [r for r in results if r["table"] == key]
    if not group:
      continue
    lines += [f"### {title}", "", "Final test accuracy:", ""]
    lines += table(group, accuracy_cell)
    lines += ["", "Sum of the layers' weight norms at the end:", ""]
    lines += table(group, norm_cell)
    lines += ["", setting_line(group), ""]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("files", nargs="+")
  parser.add_argument("--write", default=None)
  args = parser.parse_args(argv)
  text = markdown(load(args.files))
  if args.write is None:
    print(text)
    return
  content = open(args.write).read() if os.path.exists(args.write) else ""
  if BEGIN not in content:
    raise ValueError(f"{args.write} lacks the markers {BEGIN} ... {END}.")
  block = f"{BEGIN}\n{text}\n{END}"
  content = re.sub(
    re.escape(BEGIN) + ".*?" + re.escape(END),
    lambda _: block,
    content,
    flags=re.DOTALL,
  )
  with open(args.write, "w") as file:
    file.write(content)


if __name__ == "__main__":
  main()
