"""The JSON rules every client body obeys: :func:`parse_json_object`.

One parser for messages (the pipeline) and token requests (the token endpoint): UTF-8 only,
containers at most ``max_depth`` deep (checked by a flat scan *before* parsing), finite
numbers, unique keys, no lone surrogates, an object at the top.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from apigw_ws_core.errors import InvalidJson, InvalidMessage

__all__ = ["nesting_exceeds", "parse_json_object"]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string (key or value) of a parsed message holds a lone surrogate
    (``"\\ud800"`` is valid JSON syntax but no valid text: it could not be sent or stored
    as UTF-8). Nesting depth is not checked here: :func:`nesting_exceeds` did it exactly,
    before parsing."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(_SURROGATE.search(k) for k in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            return True
    return False


_JSON_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests containers deeper than ``limit``, found by a flat scan.

    Runs before :func:`json.loads`, whose C parser recurses once per level: a body of
    100 000 ``[`` overflows the C stack of a thread with a small stack (128 KiB: musl's
    default, uWSGI's ``thread-stacksize``) and kills the process instead of raising.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    skip = -1
    for match in _JSON_STRUCTURE.finditer(raw):
        i = match.start()
        if i < skip:
            continue
        char = raw[i]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                skip = i + 2
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif char in (0x5D, 0x7D):
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999999 parses to inf: not a JSON number we can echo
        raise ValueError("number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # {"action": "a", "action": "b"}: parsers disagree; refuse
        raise ValueError("duplicate key")
    return obj


def parse_json_object(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """Parse a client JSON body into an object with the rules above.

    Raises :class:`~apigw_ws_core.errors.InvalidJson` (malformed, too deep, not UTF-8,
    non-finite numbers, duplicate keys, lone surrogates) or
    :class:`~apigw_ws_core.errors.InvalidMessage` (not an object), both 400.
    """
    if nesting_exceeds(raw, max_depth):
        raise InvalidJson("Message is nested too deeply.")
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidJson() from exc
    if not isinstance(value, dict):
        raise InvalidMessage()
    # Lone surrogates can only come from \u escapes (UTF-8 decoding refused raw ones).
    if b"\\u" in raw and _has_lone_surrogate(value):
        raise InvalidJson("Message contains an unpaired surrogate.")
    return value
