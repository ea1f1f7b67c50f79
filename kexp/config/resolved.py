"""``kexp train --print-config``: the config exactly as a run would use it.

``extends`` merged, ``--set`` overrides applied, every default filled in, data paths
absolute: the same document a run saves as ``config.yaml`` (except the seed, which a run
draws when the config has none).
"""

from __future__ import annotations

from kexp.config.loader import LoadedConfig
from kexp.config.yaml_io import dump


def resolved_yaml(loaded: LoadedConfig) -> str:
    """YAML text of the resolved config, headed by comments saying where it came from."""
    head = [f"# resolved config of {loaded.file}" if loaded.file else "# resolved config"]
    if loaded.bases:
        head.append("# extends: " + ", ".join(loaded.bases))
    for override in loaded.overrides:
        head.append(f"# --set {override}")
    if loaded.config.seed is None:
        head.append("# seed: null -> each run draws a seed and saves it in its config.yaml")
    return "\n".join(head) + "\n" + dump(loaded.to_dict())
