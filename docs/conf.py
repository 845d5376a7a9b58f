"""Sphinx configuration of the optax_swr documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
Nothing here downloads anything at build time (no intersphinx mappings), so
the build runs offline, as CI does.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import optax_swr  # pylint: disable=g-import-not-at-top,wrong-import-position

project = "optax_swr"
author = "optax_swr developers"
copyright = "2025, optax_swr developers"  # pylint: disable=redefined-builtin
version = release = optax_swr.__version__

extensions = [
  "myst_parser",  # the pages are Markdown
  "sphinx.ext.autodoc",  # the API page, from the docstrings
  "sphinx.ext.napoleon",  # ... which are Google style
  "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints_format = "short"  # Array, not jax.jaxlib._jax.Array
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"  # the theme of optax's documentation
html_title = f"optax_swr {release}"
html_static_path = ["_static"]
html_theme_options = {
  "show_toc_level": 2,
  "use_download_button": False,
}


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields are documented by their class's ``Attributes:``."""
  del app, what, name, options  # unused
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return skip


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
