"""``source: tfrecord``: ``tf.train.Example`` records, parsed with a feature spec from YAML.

    train:
      source: tfrecord
      files: data/train-*.tfrecord.gz
      compression: gzip
      features:
        image: {dtype: string, decode: image, shape: [8, 8, 1]}
        label: {dtype: int64}
      x: image
      y: label

Before training, the files are counted (one pass over the raw records, no parsing) and the
first record is checked against the spec: a feature it lacks, or holds as another kind, is a
config error at ``features.<name>``. Records are then parsed and decoded in a parallel map.

The files a glob matched are recorded in the run (``manifest.json``, ``splits.<split>.files``):
a file added later would silently change a fraction split, since split indices are positions
in the files' records. ``kexp evaluate`` reads the recorded files (:func:`pinned`) and warns
when the glob now matches others.
"""

from __future__ import annotations

import glob
import re
import warnings
from pathlib import Path
from typing import Any

from kexp.config.schema import TfrecordSource
from kexp.config.schema.data import TfrecordFeature
from kexp.data.stream import Stream
from kexp.errors import ConfigError, ConfigIssue, ConfigWarning, KeyPath, nearest
from kexp.tf import tf

_KIND = {"float32": "float_list", "int64": "int64_list", "string": "bytes_list"}
_COMPRESSION = {"none": "", "gzip": "GZIP", "zlib": "ZLIB"}


def _files(spec: TfrecordSource, at: KeyPath) -> list[str]:
    patterns = [spec.files] if isinstance(spec.files, str) else list(spec.files)
    found: list[str] = []
    for i, pattern in enumerate(patterns):
        where = at + (("files",) if isinstance(spec.files, str) else ("files", i))
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else (
            [pattern] if Path(pattern).is_file() else [])
        if not matches:
            raise ConfigError.single(where, f"no file matches {pattern}")
        found.extend(m for m in matches if m not in found)
    return found


def pinned(spec: TfrecordSource, files: list[str], at: KeyPath) -> TfrecordSource:
    """``spec`` reading exactly ``files`` (those a run read); a warning at ``<at>.files``
    when its glob now matches a different set, a config error when one of them is gone."""
    gone = [f for f in files if not Path(f).is_file()]
    if gone:
        raise ConfigError.single(
            at + ("files",),
            f"the run read {len(files)} file(s), and {len(gone)} of them no longer exist "
            f"({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}): the data changed "
            "since the run",
        )
    try:
        now = _files(spec, at)
    except ConfigError:
        now = []
    if sorted(now) != sorted(files):
        new = [f for f in now if f not in files]
        warnings.warn(ConfigWarning(ConfigIssue(at + ("files",), (
            f"{spec.files} now matches {len(now)} file(s), the run read {len(files)}"
            + (f" (not read: {', '.join(new[:3])}{', ...' if len(new) > 3 else ''})" if new else "")
            + "; using the run's files"), severity="warning")), stacklevel=3)
    return spec.model_copy(update={"files": list(files)})


def _parse_spec(feature: TfrecordFeature) -> Any:
    dtype = tf.string if feature.decode == "image" else tf.as_dtype(feature.dtype)
    shape = [] if feature.decode == "image" else list(feature.shape)
    default = feature.default
    if default is not None and shape and not isinstance(default, list):
        count = 1
        for d in shape:
            count *= d
        default = [default] * count
    return tf.io.FixedLenFeature(shape, dtype, default_value=default)


def _check_image(value: bytes, name: str, feature: Any, at: KeyPath) -> None:
    """The first image of an image feature decodes to its declared ``shape`` (with
    ``channels``): else ``tf.ensure_shape`` fails inside the pipeline, a traceback."""
    try:
        decoded = tf.io.decode_image(value, channels=feature.channels, expand_animations=False)
    except (tf.errors.OpError, ValueError) as exc:
        raise ConfigError.single(at + ("features", name), f"the first '{name}' cannot be "
                                 f"decoded as an image: {str(exc).splitlines()[0]}") from None
    got = tuple(decoded.shape)
    want = tuple(feature.shape)
    if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
        how = f"with channels: {feature.channels}" if feature.channels else "as stored"
        raise ConfigError.single(
            at + ("features", name, "shape"),
            f"the first '{name}' decodes ({how}) to an image of shape {list(got)}, not "
            f"{list(want)}; make shape and channels agree with the stored images")


def _check_first(raw: Any, spec: TfrecordSource, at: KeyPath, files: list[str]) -> None:
    """The first record must be an Example with every declared feature, of its kind."""
    try:
        first = next(iter(raw.take(1)), None)
    except tf.errors.OpError as exc:
        why = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]( name:\s*)?", "",
                     exc.message).splitlines()[0]
        # on the command line (predict, evaluate) a file is read as the run read its training
        # split; there is no option of its own to say otherwise
        said = ("the run's data.train.compression, which files given on the command line "
                "follow," if at[:1] == ("input",) else ".".join(map(str, at)) + ".compression")
        raise ConfigError.single(
            at + ("files",), f"cannot read {files[0]}: {why} (is it written with compression: "
            f"{spec.compression}? {said} says so)") from None
    if first is None:
        raise ConfigError.single(at + ("files",), "the files hold no records")
    try:
        example = tf.train.Example.FromString(first.numpy())
    except Exception:  # protobuf DecodeError
        raise ConfigError.single(
            at + ("files",), f"the records of {files[0]} are not tf.train.Example protos"
        ) from None
    present = dict(example.features.feature)
    for name, feature in spec.features.items():
        if name not in present:
            if feature.default is None:
                raise ConfigError.single(
                    at + ("features", name),
                    f"the records have no feature '{name}' (they have: {', '.join(sorted(present))})",
                    suggestion=nearest(name, present),
                )
            continue
        kind = present[name].WhichOneof("kind")
        wanted = "bytes_list" if feature.decode == "image" else _KIND[feature.dtype]
        if kind != wanted:
            have = {v: k for k, v in _KIND.items()}.get(kind, kind)
            raise ConfigError.single(
                at + ("features", name, "dtype"),
                f"feature '{name}' is stored as {have}, not {feature.dtype}",
            )
        if feature.decode == "image" and feature.shape:
            _check_image(present[name].bytes_list.value[0], name, feature, at)


def load_tfrecord(spec: TfrecordSource, path: KeyPath, context: Any = None) -> Stream:
    """A :class:`Stream` of parsed examples from the TFRecord files of ``spec``."""
    files = _files(spec, path)
    compression = _COMPRESSION[spec.compression]

    def records() -> Any:
        return tf.data.TFRecordDataset(files, compression_type=compression)

    raw = records()
    _check_first(raw, spec, path, files)
    try:
        length = int(raw.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    except tf.errors.OpError as exc:
        raise ConfigError.single(
            path + ("files",), f"cannot read the records (compression: {spec.compression}?): "
            f"{exc.message.splitlines()[0]}"
        ) from None
    features = {name: _parse_spec(f) for name, f in spec.features.items()}

    def decode(name: str, value: Any) -> Any:
        feature = spec.features[name]
        if feature.decode != "image":
            return value
        image = tf.io.decode_image(value, channels=feature.channels, expand_animations=False)
        image = tf.cast(image, tf.float32)
        return tf.ensure_shape(image, feature.shape) if feature.shape else image

    def pick(parsed: dict[str, Any], keys: Any) -> Any:
        if isinstance(keys, dict):
            return {k: decode(v, parsed[v]) for k, v in keys.items()}
        return decode(keys, parsed[keys])

    def parse(record: Any) -> Any:
        parsed = tf.io.parse_single_example(record, features)
        x = pick(parsed, spec.x)
        return x if spec.y is None else (x, pick(parsed, spec.y))

    def build() -> Any:
        return records().map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return Stream(build, length, spec.y is not None, list(files), source_files=len(files),
                  matched_files=list(files), at=path + ("files",), finite_guard=True).checked()
