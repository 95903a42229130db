"""Turning any column value into a JSON-safe value, and encoding it compactly."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any


def compact_encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """``json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=...).encode``, with the C
    encoder made once instead of on every call (a third of the time of encoding an event's changes). Values
    are already JSON-safe trees, so it skips the circular-reference check (a cycle raises RecursionError)."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without the json C accelerator
        return encoder.encode
    encode_chunks = make(None, encoder.default, json.encoder.encode_basestring, None, ":", ",", sort_keys,
                         False, True)

    def encode(value: Any) -> str:
        return "".join(encode_chunks(value, 0))

    return encode


_encode_sorted = compact_encoder(sort_keys=True)
PLAIN_TYPES: frozenset[type] = frozenset({str, int, bool, type(None)})
"""Types that are JSON as they are: callers on hot paths test ``type(v) in PLAIN_TYPES`` before calling."""


def json_safe(value: Any) -> Any:
    """A JSON-representable equivalent of ``value``.

    datetime/date/time become ISO 8601 strings (aware datetimes keep their offset), Decimal a string (no
    precision lost), UUID a string, enums their value, bytes ``"base64:..."``, sets a sorted list, tuples a
    list, mappings a dict with string keys; anything else unknown its ``str()``.
    """
    kind = type(value)
    if kind in PLAIN_TYPES:
        return value
    convert = _CONVERT_EXACT.get(kind)  # the common column types, without walking the isinstance chain
    if convert is not None:
        return convert(value)
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        items = [json_safe(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


_CONVERT_EXACT: dict[type, Callable[[Any], Any]] = {
    dt.datetime: dt.datetime.isoformat,
    dt.date: dt.date.isoformat,
    decimal.Decimal: str,
    uuid.UUID: str,
    dict: lambda value: {str(k): json_safe(v) for k, v in value.items()},
    list: lambda value: [json_safe(v) for v in value],
}


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON of an already JSON-safe value."""
    return _encode_sorted(value)


def loads(text: str | bytes | None) -> Any:
    if text is None or text == "":
        return None
    return json.loads(text)
