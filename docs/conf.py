"""Sphinx configuration of the pulse-trio documentation.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (CI does, with
warnings as errors). Pages are Markdown (MyST); the API reference is generated from the
Google-style docstrings by autodoc and napoleon.
"""

from __future__ import annotations

import pulse_trio

project = "pulse-trio"
author = "pulse-trio developers"
copyright = "pulse-trio developers"
release = pulse_trio.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ``{ref}``-style roles and anchors for headings, so pages can link to sections.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: members in source order, type hints in the description (not the signature).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False


html_theme = "furo"
html_title = f"pulse-trio {release}"

# The docstrings' own sections (STYLE: a Cancellation paragraph on anything that owns tasks).
napoleon_custom_sections = ["Cancellation", "Guarantees", "Connections"]
