"""Train a character-level GPT with AdamW, exact SWR, the hyperball and more.

Each method of ``--methods`` trains over its grid (every ``--lr`` times every
value of its coefficient flag) and ``--seeds`` seeds, all runs of a method
vmapped in one compiled step. Every ``--eval-every`` steps each run's mean
cross-entropy (nats per character) is measured on fixed windows of the
validation split and of the test split (``examples/lm/text.py``: the last
10% of the text, halved). A method's setting is the one with the lowest
final validation loss, averaged over seeds; the tables report its test loss,
so the choice never reads the reported split.

  python -m examples.lm.char_gpt --out /tmp/char_gpt.json

The defaults are the short run ``examples/lm/run_results.sh quick`` makes (a
66,325-parameter GPT, 500 steps, each coefficient at one value, about 5
minutes on 2 cores); ``--dim 160 --depth 4 --context 128 --batch-size 32``
is the 1.3M-parameter model of the issue's study (``run_results.sh full``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import time
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from examples import cli
from examples.lm import methods as methods_lib
from examples.lm import model as model_lib
from examples.lm import selection
from examples.lm import text as text_lib
from examples.lm import training
from examples.paper import beyond_chains
import optax_swr
from optax_swr import metrics

DEFAULT_METHODS = "adam,adamw,swr,swr_logits,swr_chain_rule,adamh,swr_adamw"
DEFAULT_LR = "1e-3,3e-3,1e-2"
METHOD_NAMES = tuple(methods_lib.METHODS)


def add_flags(
  parser: argparse.ArgumentParser, methods: str, lr: str, coef_grids: bool
) -> None:
  """The flags of both language-model scripts.

  Args:
    parser: the parser to add them to.
    methods: the default ``--methods``.
    lr: the default ``--lr`` (comma-separated).
    coef_grids: whether each coefficient flag defaults to its method's
      3-value grid (else to the grid's middle value).
  """
  parser.add_argument(
    "--text", default=text_lib.SHAKESPEARE, help="'shakespeare' or a UTF-8 file"
  )
  parser.add_argument("--methods", default=methods)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--lr", default=lr, help="learning rates")
  for name, spec in methods_lib.METHODS.items():
    if spec.flag and spec.flag not in parser._option_string_actions:
      values = spec.default if coef_grids else spec.default[1:2]
      parser.add_argument(
        spec.flag,
        default=",".join(f"{v:g}" for v in values),
        help=f"{name}'s coefficients",
      )
  parser.add_argument("--swr-adamw-decay", type=float, default=0.1)
  parser.add_argument("--context", type=int, default=32)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--dim", type=int, default=48)
  parser.add_argument("--depth", type=int, default=2)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--eval-every", type=int, default=100)
  parser.add_argument("--eval-windows", type=int, default=64)
  parser.add_argument("--out", help="write the results as JSON")
  parser.add_argument("--no-progress", action="store_true")


def parse(
  argv: Sequence[str] | None,
  doc: str,
  methods: str,
  lr: str,
  coef_grids: bool,
  more_flags: Callable[[argparse.ArgumentParser], None] | None = None,
  **extra: int,
) -> argparse.Namespace:
  """Parses and checks the flags; ``extra`` adds int flags with defaults,
  ``more_flags`` any other flags of a script."""
  parser = cli.parser(doc)
  add_flags(parser, methods, lr, coef_grids)
  if more_flags:
    more_flags(parser)
  for flag, default in extra.items():
    parser.add_argument(
      f"--{flag.replace('_', '-')}", type=int, default=default
    )
  args = parser.parse_args(argv)
  # What the command line set, for --from-selection (which sets the rest).
  args.given = sorted(
    key for key, value in vars(args).items() if value != parser.get_default(key)
  )
  args.methods = cli.parse_methods(args.methods, tuple(methods_lib.METHODS))
  args.lr = cli.parse_coefs("--lr", args.lr, upper=None)
  if any(lr <= 0 for lr in args.lr):
    raise ValueError(f"--lr: every learning rate must be > 0; got {args.lr}")
  args.coefs = {name: coefs_of(args, name) for name in METHOD_NAMES}
  args.lrs = {name: args.lr for name in METHOD_NAMES}
  for flag in (
    "seeds",
    "context",
    "batch_size",
    "dim",
    "depth",
    "heads",
    "eval_every",
  ):
    cli.check_positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
  if args.dim % args.heads:
    raise ValueError(f"--heads {args.heads} must divide --dim {args.dim}")
  cli.check_out_path(args.out)
  return args


def coefs_of(args: argparse.Namespace, name: str) -> tuple[float, ...]:
  """Method ``name``'s coefficient values from its flag; (0,) without one."""
  flag = methods_lib.METHODS[name].flag
  if flag is None:
    return (0.0,)
  value = getattr(args, flag[2:].replace("-", "_"))
  return cli.parse_coefs(flag, value, selection.coef_upper(name))


def setup(args: argparse.Namespace):
  """The corpus, the model, its traced layers and the evaluation windows."""
  corpus = text_lib.Corpus.from_text(text_lib.load(args.text))
  corpus.check_context(args.context)
  model = model_lib.GPT(
    corpus.vocab_size,
    args.context,
    args.dim,
    args.depth,
    args.heads,
    log_probs=True,
    temperature=True,
  )
  traced = trace(model, args.context)
  valid = training.eval_windows(corpus.valid, args.context, args.eval_windows)
  test = training.eval_windows(corpus.test, args.context, args.eval_windows)
  return corpus, model, traced, valid, test


def trace(model: model_lib.GPT, context: int) -> methods_lib.Traced:
  """The model's layers traced twice: from its log-probabilities and its logits."""
  ids = jnp.zeros((1, context), jnp.int32)
  variables = model.init(jax.random.key(0), ids)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    exact = optax_swr.layers_from_linen(model, variables, ids)
    logits = optax_swr.layers_from_linen(
      model.clone(log_probs=False), variables, ids
    )
  return methods_lib.Traced(exact, logits)


def layer_report(traced: methods_lib.Traced) -> dict[str, dict[str, str]]:
  """Per traced layer: free, constrained or pinned, under each trace."""
  return {
    kind: dict(zip(layers.names, beyond_chains.layer_classes(layers)))
    for kind, layers in (("exact", traced.exact), ("logits", traced.logits))
  }


def trainer_and_runs(args, name, corpus, model, traced):
  """One method's trainer, its grid of runs and their initial state."""
  trainer = training.Trainer(
    model,
    name,
    traced,
    corpus.train,
    args.context,
    args.batch_size,
    args.swr_adamw_decay,
  )
  seeds = list(range(args.seeds))
  runs = training.Runs.grid(
    args.lrs[name], args.coefs[name], seeds, corpus.vocab_size
  )
  return trainer, runs, trainer.init(runs)


def run_method(
  args, name, corpus, model, traced, valid, test
) -> dict[str, Any]:
  """Trains every run of one method; the per-run curves, as lists."""
  trainer, runs, state = trainer_and_runs(args, name, corpus, model, traced)
  curves: dict[str, list] = {k: [] for k in ("val", "test", "train", "norm")}
  chunk_times = []
  for first in range(0, args.steps, args.eval_every):
    steps = min(args.eval_every, args.steps - first)
    start = time.perf_counter()
    state, losses = trainer.train(state, runs, jnp.int32(first), steps=steps)
    losses.block_until_ready()
    chunk_times.append((time.perf_counter() - start) / steps)
    curves["train"].append(np.asarray(losses.mean(axis=1)))
    curves["val"].append(np.asarray(trainer.evaluate(state, runs, *valid)))
    curves["test"].append(np.asarray(trainer.evaluate(state, runs, *test)))
    curves["norm"].append(np.asarray(training.matrix_norms(state.params)))
    if not args.no_progress:
      print(
        f"  {name} step {first + steps}: val {curves['val'][-1].mean():.3f}"
      )
  # The first chunk compiles: time the others (or the only one).
  step_time = float(np.median(chunk_times[1:] or chunk_times))
  return {
    "runs": training.runs_record(runs),
    "curves": {
      k: np.stack(v, axis=1).round(5).tolist() for k, v in curves.items()
    },
    "layer_norm_ratios": norm_ratios(state, traced.exact),
    "step_time_s": step_time,
    # Every run's tokens: the runs share each vmapped step.
    "tokens_per_s": len(runs.seed) * args.batch_size * args.context / step_time,
    "runs_per_step": len(runs.seed),
  }


def norm_ratios(
  state: training.State, layers: optax_swr.Layers
) -> dict[str, list]:
  """Per layer and run: ||W|| at the end over ||W|| at initialisation."""
  norms = jax.vmap(lambda params: metrics.layer_norms(params, layers))
  ratios = np.asarray(norms(state.params) / norms(state.initial)).round(4)
  return {name: ratios[:, l].tolist() for l, name in enumerate(layers.names)}


def select(args, result: dict[str, Any]) -> dict[str, Any]:
  """The setting with the lowest final validation loss (mean over seeds)."""
  final_val = np.asarray(result["curves"]["val"])[:, -1]
  choice = selection.choose(result["runs"], final_val)
  rows = choice.pop("rows")
  pick = lambda k: [result["curves"][k][i] for i in rows]
  return {
    **choice,
    "val_loss": pick("val"),
    "test_loss": pick("test"),
    "train_loss": pick("train"),
    "weight_norms": pick("norm"),
    "layer_norm_ratios": {
      k: [v[i] for i in rows] for k, v in result["layer_norm_ratios"].items()
    },
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse(argv, __doc__, DEFAULT_METHODS, DEFAULT_LR, False, steps=500)
  cli.check_positive("--steps", args.steps)
  start = time.perf_counter()
  corpus, model, traced, valid, test = setup(args)
  params = model.init(
    jax.random.key(0), jnp.zeros((1, args.context), jnp.int32)
  )
  results: dict[str, Any] = {
    "config": config_record(args),
    "versions": cli.versions(),
    "corpus": corpus_summary(corpus),
    "model": {"params": model_lib.param_count(params["params"])},
    "swr_layers": layer_report(traced),
    "eval_steps": [
      min(s + args.eval_every, args.steps)
      for s in range(0, args.steps, args.eval_every)
    ],
    "methods": {},
  }
  for name in args.methods:
    result = run_method(args, name, corpus, model, traced, valid, test)
    results["methods"][name] = {
      **select(args, result),
      **{
        k: result[k] for k in ("step_time_s", "tokens_per_s", "runs_per_step")
      },
    }
  results["wall_time_s"] = time.perf_counter() - start
  print_summary(results)
  if args.out:
    cli.write_json(args.out, results)
  return results


def config_record(args: argparse.Namespace) -> dict[str, Any]:
  """The flags as the JSON keeps them: each run method's grid, not every method's."""
  config = {**vars(args), "methods": list(args.methods)}
  for key in ("coefs", "lrs"):
    config[key] = {name: list(config[key][name]) for name in args.methods}
  return config


def corpus_summary(corpus: text_lib.Corpus) -> dict[str, Any]:
  return {
    "vocab_size": corpus.vocab_size,
    "train_chars": len(corpus.train),
    "valid_chars": len(corpus.valid),
    "test_chars": len(corpus.test),
    "unigram_entropy": corpus.unigram_entropy(),
  }


def print_summary(results: dict[str, Any]) -> None:
  print(
    f"{results['model']['params']} params; wall time {results['wall_time_s']:.0f} s"
  )
  for name, entry in results["methods"].items():
    test = np.asarray(entry["test_loss"])[:, -1]
    print(
      f"{name:16s} lr {entry['lr']:g} coef {entry['coef']:g}: test {test.mean():.4f} "
      f"± {test.std(ddof=1) if len(test) > 1 else 0:.4f}, {entry['step_time_s'] * 1e3:.1f} ms/step"
      + (f" (edge: {', '.join(entry['at_edge'])})" if entry["at_edge"] else "")
    )


if __name__ == "__main__":
  main()
