"""The language-model examples: text, GPT, exact SWR on it, the two scripts."""

from __future__ import annotations

import io
import json
import os
import tarfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from examples.lm import char_gpt
from examples.lm import methods as methods_lib
from examples.lm import model as model_lib
from examples.lm import permuted_vocab
from examples.lm import report
from examples.lm import selection
from examples.lm import text as text_lib
from examples.lm import training
import optax_swr
from optax_swr import baselines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--context", "16", "--dim", "16", "--depth", "1", "--heads", "2"]
SMALL += ["--batch-size", "8", "--eval-windows", "8", "--no-progress"]


@pytest.fixture(scope="module")
def text_file() -> str:
  """The project's LICENSE: 11 KB of English that does not change.

  (The docs changed with every edit, and with them the split, the
  vocabulary and how far 50 steps get.)
  """
  return os.path.join(REPO, "LICENSE")


def small_gpt(vocab: int = 30, **kwargs) -> model_lib.GPT:
  return model_lib.GPT(vocab, context=12, dim=16, depth=2, heads=2, **kwargs)


def pushed_off_params(model, ids, seed: int = 1):
  """Params with random biases and every leaf scaled off its init norm."""
  params = model.init(jax.random.key(0), ids)["params"]
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [
    leaf * jnp.exp(jax.random.uniform(k, (), minval=-0.7, maxval=0.7))
    + 0.1 * jax.random.normal(k, leaf.shape)
    for leaf, k in zip(leaves, keys)
  ]
  return params, jax.tree.unflatten(treedef, leaves)


# --- text ------------------------------------------------------------------


def test_split_is_by_position_90_5_5():
  train, valid, test = text_lib.split(np.arange(1000))
  np.testing.assert_array_equal(train, np.arange(900))
  np.testing.assert_array_equal(valid, np.arange(900, 950))
  np.testing.assert_array_equal(test, np.arange(950, 1000))


def test_corpus_round_trips_and_measures_entropy():
  corpus = text_lib.Corpus.from_text("abab" * 50 + "c" * 50)
  assert corpus.vocab == "abc"
  assert corpus.decode(corpus.train[:4]) == "abab"
  counts = np.bincount(corpus.train, minlength=3) / len(corpus.train)
  p = counts[counts > 0]
  np.testing.assert_allclose(corpus.unigram_entropy(), -(p * np.log(p)).sum())


@pytest.mark.parametrize(
  "content, message",
  [(b"", "empty"), (b"abc\x00def", "NUL"), (b"caf\xe9 \xff", "not UTF-8")],
)
def test_bad_text_files_name_the_flag(tmp_path, content, message):
  path = tmp_path / "bad.txt"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=f"--text.*{message}"):
    text_lib.load(str(path))


def test_missing_archive_says_how_to_fetch(tmp_path, monkeypatch):
  monkeypatch.setenv("OPTAX_SWR_DATA", str(tmp_path))
  with pytest.raises(ValueError, match="make lm-data"):
    text_lib.load("shakespeare")


def test_archive_with_another_hash_is_refused(tmp_path):
  path = tmp_path / text_lib.SHAKESPEARE_ARCHIVE
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
    data = b"To be, or not to be"
    info = tarfile.TarInfo(text_lib.SHAKESPEARE_MEMBERS + "hamlet_gut.txt")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
  path.write_bytes(buffer.getvalue())
  with pytest.raises(ValueError, match="SHA-256"):
    text_lib.read_shakespeare(str(path))


def test_context_longer_than_the_held_out_splits_is_refused():
  corpus = text_lib.Corpus.from_text("x" * 400)  # 20 characters per split
  corpus.check_context(19)
  with pytest.raises(ValueError, match="--context 20"):
    corpus.check_context(20)


# --- the model and exact SWR -------------------------------------------------


def test_gpt_is_causal():
  model = small_gpt()
  ids = jax.random.randint(jax.random.key(0), (2, 12), 0, 30)
  params = model.init(jax.random.key(1), ids)
  changed = ids.at[:, 7].set((ids[:, 7] + 1) % 30)
  a, b = model.apply(params, ids), model.apply(params, changed)
  np.testing.assert_array_equal(a[:, :7], b[:, :7])
  assert not np.allclose(a[:, 7:], b[:, 7:])


def test_exact_swr_keeps_the_gpt_logits_proportional_at_every_step():
  model = small_gpt(temperature=True)
  ids = jax.random.randint(jax.random.key(2), (4, 12), 0, 30)
  initial, params = pushed_off_params(model, ids)
  layers = optax_swr.layers_from_linen(model, {"params": initial}, ids)
  tx = optax.chain(optax.adam(1e-2), optax_swr.swr(0.3, layers=layers))
  state = tx.init(initial)
  loss = lambda p: training.cross_entropy(model.apply({"params": p}, ids), ids)
  swr_only = optax_swr.swr(0.3, layers=layers)

  @jax.jit
  def logits_before_and_after_swr(params):
    zero = jax.tree.map(jnp.zeros_like, params)
    step, _ = swr_only.update(zero, swr_only.init(initial), params)
    after = optax.apply_updates(params, step)
    return model.apply({"params": params}, ids), model.apply(
      {"params": after}, ids
    )

  @jax.jit
  def train_step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(5):
    before, after = logits_before_and_after_swr(params)
    scale = jnp.vdot(after, before) / jnp.vdot(before, before)
    atol = 2e-5 * float(jnp.abs(before).max())
    chex.assert_trees_all_close(after, scale * before, rtol=0, atol=atol)
    assert abs(float(scale) - 1) > 1e-3  # the logits' scale moved
    params, state = train_step(params, state)


@pytest.mark.parametrize("temperature", [False, True])
def test_the_log_prob_output_keeps_the_loss_itself(temperature):
  model = small_gpt(log_probs=True, temperature=temperature)
  ids = jax.random.randint(jax.random.key(3), (4, 12), 0, 30)
  initial, params = pushed_off_params(model, ids)
  layers = optax_swr.layers_from_linen(model, {"params": initial}, ids)
  tx = optax_swr.swr(0.5, layers=layers)
  zero = jax.tree.map(jnp.zeros_like, params)
  step, _ = tx.update(zero, tx.init(initial), params)
  rescaled = optax.apply_updates(params, step)
  loss = lambda p: training.cross_entropy(model.apply({"params": p}, ids), ids)
  np.testing.assert_allclose(loss(rescaled), loss(params), rtol=2e-6)
  ratio = lambda name, leaf: float(
    jnp.linalg.norm(rescaled[name][leaf]) / jnp.linalg.norm(params[name][leaf])
  )
  head, norm = ratio("head", "kernel"), ratio("norm", "scale")
  if (
    temperature
  ):  # the temperature absorbs the final LayerNorm's and head's factors
    assert abs(head - 1) > 1e-3
    np.testing.assert_allclose(
      norm * head * ratio("temperature", "kernel"), 1.0, rtol=1e-5
    )
  else:  # the final LayerNorm's factor and the head's cancel
    np.testing.assert_allclose(norm * head, 1.0, rtol=1e-5)


# --- training ----------------------------------------------------------------


def test_train_step_compiles_once_and_learns_below_the_unigram_entropy(
  text_file,
):
  corpus = text_lib.Corpus.from_text(text_lib.load(text_file))
  model = model_lib.GPT(
    corpus.vocab_size, 32, 32, 2, 2, log_probs=True, temperature=True
  )
  traced = char_gpt.trace(model, 32)
  trainer = training.Trainer(model, "swr", traced, corpus.train, 32, 16)
  runs = training.Runs.grid([3e-3], [1e-2], [0, 1], corpus.vocab_size)
  state = trainer.init(runs)
  for first in range(0, 50, 10):
    state, _ = trainer.train(state, runs, jnp.int32(first), steps=10)
  assert trainer.train._cache_size() == 1
  valid = training.eval_windows(corpus.valid, 32, 16)
  losses = np.asarray(trainer.evaluate(state, runs, *valid))
  assert np.all(losses < corpus.unigram_entropy()), (
    losses,
    corpus.unigram_entropy(),
  )


def test_every_other_method_builds_and_runs_one_step():
  model = model_lib.GPT(30, 12, 8, 1, 2, log_probs=True, temperature=True)
  traced = char_gpt.trace(model, 12)
  ids = np.random.default_rng(0).integers(0, 30, 500)
  # adam, swr and snp run in the scripts' tests below. One step op by op:
  # compiling each method's whole training chunk would take most of the time.
  for name in sorted(set(methods_lib.METHODS) - {"adam", "swr", "snp"}):
    trainer = training.Trainer(model, name, traced, ids, 12, 4)
    runs = training.Runs.grid([1e-3], [1e-2], [0], 30)
    with jax.disable_jit():
      state, loss = trainer.train(
        trainer.init(runs), runs, jnp.int32(0), steps=1
      )
    assert np.isfinite(np.asarray(loss)).all(), name
    moved = jax.tree.map(
      lambda a, b: bool(jnp.any(a != b)), state.params, state.initial
    )
    assert any(jax.tree.leaves(moved)), name


def test_unknown_method_names_the_flag(text_file):
  with pytest.raises(ValueError, match="--methods"):
    char_gpt.main(["--text", text_file, "--methods", "adam,lion"] + SMALL)


def test_context_too_long_for_the_text_names_the_flag(tmp_path):
  path = tmp_path / "short.txt"
  path.write_text("to be or not to be " * 20)
  with pytest.raises(ValueError, match="--context 64"):
    char_gpt.main(["--text", str(path), "--methods", "adam", "--context", "64"])


def test_char_gpt_writes_its_json_and_chooses_on_validation(
  text_file, tmp_path
):
  out = tmp_path / "gpt.json"
  argv = ["--text", text_file, "--methods", "adam,swr", "--steps", "20"]
  argv += ["--eval-every", "10", "--seeds", "2", "--lr", "1e-3,1e-2"]
  argv += ["--swr", "1e-2", "--out", str(out)] + SMALL
  char_gpt.main(argv)
  results = json.loads(out.read_text())
  entry = results["methods"]["swr"]
  assert np.shape(entry["test_loss"]) == (2, 2)
  assert np.shape(entry["val_loss"]) == (2, 2)
  grid = {(lr, c): score for lr, c, score in entry["grid_val_loss"]}
  assert min(grid, key=grid.get) == (
    pytest.approx(entry["lr"]),
    pytest.approx(entry["coef"]),
  )
  assert set(results["swr_layers"]["exact"]) >= {
    "head",
    "temperature",
    "tokens",
  }


# --- the continual protocol --------------------------------------------------


def test_permutations_are_fixed_per_task_and_seed():
  a = permuted_vocab.permutation(3, 5, 40)
  np.testing.assert_array_equal(a, permuted_vocab.permutation(3, 5, 40))
  assert not np.array_equal(a, permuted_vocab.permutation(4, 5, 40))
  assert not np.array_equal(a, permuted_vocab.permutation(3, 6, 40))
  np.testing.assert_array_equal(np.sort(a), np.arange(40))
  np.testing.assert_array_equal(
    permuted_vocab.permutation(3, 0, 40), np.arange(40)
  )


def test_permuted_vocab_runs_each_method_on_the_same_tasks(text_file, tmp_path):
  out = tmp_path / "perm.json"
  argv = ["--text", text_file, "--methods", "adam,snp", "--tasks", "3"]
  argv += ["--steps-per-task", "10", "--eval-every", "10", "--seeds", "2"]
  argv += ["--lr", "3e-3", "--snp", "0.3", "--out", str(out), "--workers", "1"]
  permuted_vocab.main(argv + SMALL)
  results = json.loads(out.read_text())
  for entry in results["methods"].values():
    assert np.shape(entry["task_test_loss"]) == (2, 3)
    assert np.shape(entry["fresh_test_loss"]) == (2,)
  assert results["methods"]["snp"]["coef"] == pytest.approx(0.3)
  table = report.permuted_lines(results)
  assert [row.split("|")[1].strip() for row in table[2:]] == ["adam", "snp"]
  assert "3 tasks × 10 steps" in report.markdown(None, str(out), None)


def test_shrink_toward_initial_matches_the_baseline():
  params = {"w": jnp.arange(6.0).reshape(2, 3)}
  initial = {"w": jnp.ones((2, 3))}
  state = training.State(params, None, initial)
  out = permuted_vocab.shrink_toward_initial(state, jnp.array([0.25, 1.0]))
  for run, coef in enumerate((0.25, 1.0)):
    expected = baselines.shrink_perturb(
      {"w": params["w"][run]}, {"w": initial["w"][run]}, coef
    )
    np.testing.assert_allclose(out["w"][run], expected["w"], rtol=1e-6)


# --- settings chosen in files: --from-selection --------------------------------


def selection_file(tmp_path, name: str, methods: dict, **config) -> str:
  """A selection run's JSON: ``methods`` maps a name to (lr, coef, grid)."""
  entries = {
    m: {"lr": lr, "coef": coef, "grid_val_loss": grid, "at_edge": []}
    for m, (lr, coef, grid) in methods.items()
  }
  path = tmp_path / name
  config = {"tasks": 20, "steps_per_task": 100, "context": 32, **config}
  path.write_text(
    json.dumps({"config": config, "wall_time_s": 1.0, "methods": entries})
  )
  return str(path)


@pytest.fixture
def chosen_files(tmp_path) -> str:
  """adam at lr 3e-3; swr at 0.1 inside 0.01..1 once its extension is added."""
  first = selection_file(
    tmp_path,
    "first.json",
    {
      "adam": (3e-3, 0.0, [[3e-3, 0.0, 2.0]]),
      "swr": (3e-3, 1.0, [[3e-3, 0.01, 2.5], [3e-3, 1.0, 2.2]]),
      "l2_init": (3e-3, 0.01, [[3e-3, 1e-3, 2.3], [3e-3, 0.01, 2.1]]),
    },
  )
  extension = selection_file(
    tmp_path,
    "extension.json",
    {"l2_init": (3e-3, 0.03, [[3e-3, 0.03, 2.4]])},
  )
  return f"{first},{extension}"


def test_from_selection_runs_each_method_at_its_chosen_setting(chosen_files):
  args = permuted_vocab.parse(["--from-selection", chosen_files])
  assert args.methods == ("adam", "swr", "l2_init")
  assert args.coefs["l2_init"] == (0.01,)  # inside 1e-3 .. 0.03 once merged
  assert args.coefs["swr"] == (1.0,)  # at its bound: allowed
  assert args.lrs["adam"] == args.lrs["swr"] == (3e-3,)
  assert args.selection["chosen"]["l2_init"] == {"lr": 3e-3, "coef": 0.01}
  # --lr sweeps the learning rate at each chosen coefficient.
  args = permuted_vocab.parse(
    ["--from-selection", chosen_files, "--lr", "1e-3,1e-2", "--methods", "swr"]
  )
  assert (args.methods, args.lrs["swr"], args.coefs["swr"]) == (
    ("swr",),
    (1e-3, 1e-2),
    (1.0,),
  )


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--swr", "0.1"], "--swr: --from-selection runs each method"),
    (["--tasks", "10"], "--tasks 10 differs from --from-selection's 20"),
    (["--methods", "adam,adamh"], "--methods: adamh not in --from-selection"),
  ],
)
def test_from_selection_refuses_what_the_selection_sets_or_lacks(
  chosen_files, flags, message
):
  with pytest.raises(ValueError, match=message):
    permuted_vocab.parse(["--from-selection", chosen_files] + flags)


def test_from_selection_refuses_a_choice_at_the_edge_of_its_grid(chosen_files):
  first = chosen_files.split(",")[0]  # l2_init's 0.01 tops 1e-3, 0.01
  with pytest.raises(ValueError, match="l2_init's chosen .* edge .* --l2-init"):
    permuted_vocab.parse(["--from-selection", first])


def test_merge_joins_a_grid_extension_and_finds_the_new_edges():
  def entry(lr, coef, grid):
    return {"lr": lr, "coef": coef, "grid_val_loss": grid, "at_edge": []}

  first = {
    "wall_time_s": 10.0,
    "methods": {
      "adam": entry(1e-3, 0.0, [[1e-3, 0.0, 2.0]]),
      "swr": entry(1e-3, 0.1, [[1e-3, 0.01, 2.5], [1e-3, 0.1, 2.2]]),
    },
  }
  extension = {
    "wall_time_s": 5.0,
    "methods": {"swr": entry(1e-3, 0.3, [[1e-3, 0.3, 2.1], [1e-3, 1.0, 2.4]])},
  }
  first["methods"]["swr"]["step_time_s"] = 0.05  # 9 runs per step
  extension["methods"]["swr"]["step_time_s"] = 0.03  # 6: not comparable
  merged = selection.merge([first, extension])
  assert merged["wall_time_s"] == 15.0
  assert merged["methods"]["swr"]["step_time_s"] == 0.05
  assert merged["methods"]["adam"] == first["methods"]["adam"]
  swr = merged["methods"]["swr"]
  assert (swr["coef"], swr["at_edge"]) == (0.3, [])  # inside 0.01 .. 1 now
  assert len(swr["grid_val_loss"]) == 4
  below = entry(1e-3, 1e-3, [[1e-3, 1e-3, 2.9]])  # extends the wrong side
  merged = selection.merge(
    [first, {"wall_time_s": 1.0, "methods": {"swr": below}}]
  )
  swr = merged["methods"]["swr"]
  assert (swr["coef"], swr["at_edge"]) == (0.1, ["coef"])
