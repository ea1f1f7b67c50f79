"""``${env:VAR}`` in config values: machine-specific bits (data roots, output dirs) stay out
of the config that is shared.

    data:
      train: {source: npz, path: "${env:DATA_DIR}/digits_train.npz"}
    train:
      epochs: ${env:EPOCHS,10}        # a default after the comma

A value that is exactly one reference is read as a YAML scalar, so ``${env:EPOCHS}`` with
``EPOCHS=5`` is the integer 5; inside a longer string the text is pasted in as is. ``$${`` is a
literal ``${``. An unset variable without a default is an error at the key that uses it.
Keys are never interpolated, only values. Substitution happens per file, before ``extends``
are merged, so every error points at the file and line that holds the reference. While a
config file is loaded such errors are collected (:mod:`kexp.config.problems`) and the value
is left as written, so the schema check still reports the file's other mistakes.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import yaml

from kexp.config.problems import LoadProblems
from kexp.config.yaml_io import SourceMap
from kexp.errors import ConfigError, ConfigIssue, KeyPath

#: ``${resolver:NAME}`` or ``${resolver:NAME,default}``; ``$${`` escapes.
_REFERENCE = re.compile(r"(\$?)\$\{(?:([^}:]*):)?([^},]*)(?:,([^}]*))?\}")


def _scalar(text: str) -> Any:
    """``text`` as a YAML scalar would read it (numbers, booleans, null), else the text."""
    from kexp.config.yaml_io import _Loader

    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, type(None))) else text


def expand(text: str, path: KeyPath, env: Mapping[str, str],
           issues: list[ConfigIssue]) -> Any:
    """``text`` with its references replaced; problems are appended to ``issues``."""

    def replace(match: re.Match) -> str:
        escaped, resolver, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if resolver is None:
            issues.append(ConfigIssue(
                path, f"'${{{name}}}' is not a reference kexp reads; an environment variable "
                f"is written ${{env:{name.strip()}}} (and a literal '${{' as '$${{')",
                value=text, has_value=True,
            ))
            return match.group(0)
        if resolver.strip() != "env":
            issues.append(ConfigIssue(
                path, f"unknown reference '${{{resolver}:...}}': only ${{env:VAR}} is supported",
                value=text, has_value=True,
            ))
            return match.group(0)
        name = name.strip()
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(ConfigIssue(
            path,
            f"environment variable {name} is not set (used as ${{env:{name}}}); set it, or "
            f"give a default: ${{env:{name},default}}",
        ))
        return match.group(0)

    matches = list(_REFERENCE.finditer(text))
    if not matches:
        return text
    result = _REFERENCE.sub(replace, text)
    whole = len(matches) == 1 and matches[0].span() == (0, len(text)) and not matches[0].group(1)
    return _scalar(result) if whole else result


def interpolate(data: Any, where: SourceMap, env: Mapping[str, str] | None = None,
                problems: LoadProblems | None = None) -> Any:
    """A copy of ``data`` with every ``${env:VAR}`` in its string values substituted.

    Raises ConfigError listing every unset variable, each at its key path and line; with
    ``problems``, records them there instead (the values stay as written) and returns.
    """
    env = os.environ if env is None else env
    issues: list[ConfigIssue] = []

    def walk(node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path + (i,)) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return expand(node, path, env, issues)
        return node

    result = walk(data, ())
    located = [i.located(*where.locate(i.path)) for i in issues]
    if located and problems is None:
        raise ConfigError(located)
    if located:
        problems.add(located)
    return result
