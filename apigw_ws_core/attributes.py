"""Connection attributes: declared ``$connect`` query parameters and headers, validated,
bounded, and stored with the session.

API Gateway sends the client's query string and headers on ``$connect`` only. Declare the
ones worth keeping (``Config.connection_attributes``)::

    Config(connection_attributes=[
        {"name": "device", "choices": ["mobile", "desktop"], "default": "desktop"},
        {"name": "locale", "pattern": r"[a-z]{2}(-[A-Z]{2})?"},
        {"name": "app_version", "source": "header", "key": "X-App-Version", "max_length": 16},
    ])

Each value is checked at ``$connect`` (a bad one is ``400 invalid_attribute``, nothing is
stored), then kept in :attr:`Session.attributes <apigw_ws_core.storage.Session.attributes>`:
handlers read ``ctx.attributes``, and sends filter on them
(``app.send(data, channel="news", attributes={"device": "mobile"})``). Undeclared
parameters are never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from apigw_ws_core.errors import ConfigurationError, InvalidAttribute

__all__ = ["MAX_ATTRIBUTES", "MAX_VALUE_LENGTH", "AttributeSpec", "read_attributes"]

#: At most this many declared attributes, each value at most this long: a session's
#: attributes stay under 4 KiB of JSON.
MAX_ATTRIBUTES = 16
MAX_VALUE_LENGTH = 200
_NAME_RE = re.compile(r"\A[a-z][a-z0-9_]{0,31}\Z")
_HEADER_RE = re.compile(r"\A[A-Za-z0-9-]{1,64}\Z")
_QUERY_KEY_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


def _choices(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class AttributeSpec:
    """One declared attribute.

    :ivar name: the attribute's name in the session (``[a-z][a-z0-9_]{0,31}``).
    :ivar source: ``"query"`` (the ``$connect`` query string) or ``"header"``.
    :ivar key: the query parameter or header name (default: ``name``).
    :ivar max_length: longest value accepted (1 to 200 characters).
    :ivar choices: if given, the only values accepted.
    :ivar pattern: if given, a regular expression the whole value must match.
    :ivar required: refuse a ``$connect`` without it (else it is absent, or ``default``).
    :ivar default: the value stored when the client sends none.
    """

    name: str
    source: Literal["query", "header"] = "query"
    key: str | None = None
    max_length: int = 64
    choices: tuple[str, ...] = attrs.field(default=(), converter=_choices)
    pattern: str | None = None
    required: bool = False
    default: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigurationError(
                f"connection attribute names are [a-z][a-z0-9_]{{0,31}}, not {self.name!r}"
            )
        if self.source not in ("query", "header"):
            raise ConfigurationError(f"attribute {self.name!r}: source is 'query' or 'header'")
        key_re = _HEADER_RE if self.source == "header" else _QUERY_KEY_RE
        if not key_re.match(self.lookup_key):
            raise ConfigurationError(f"attribute {self.name!r}: bad key {self.lookup_key!r}")
        if not isinstance(self.max_length, int) or not 1 <= self.max_length <= MAX_VALUE_LENGTH:
            raise ConfigurationError(
                f"attribute {self.name!r}: max_length must be 1-{MAX_VALUE_LENGTH}"
            )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ConfigurationError(f"attribute {self.name!r}: bad pattern: {exc}") from exc
        if self.default is not None:
            try:
                self.check(self.default)
            except InvalidAttribute as exc:
                raise ConfigurationError(
                    f"attribute {self.name!r}: the default {self.default!r} is not accepted"
                ) from exc

    @property
    def lookup_key(self) -> str:
        """The query parameter, or the lower-cased header name, to read."""
        key = self.key or self.name
        return key.lower() if self.source == "header" else key

    def check(self, value: str) -> str:
        """``value`` if acceptable (printable, not too long, allowed), else raise
        ``InvalidAttribute`` (400)."""
        if (
            not value
            or len(value) > self.max_length
            or not value.isprintable()
            or (self.choices and value not in self.choices)
            or (self.pattern is not None and re.fullmatch(self.pattern, value) is None)
        ):
            raise InvalidAttribute(f"Invalid value for connection attribute {self.name!r}.")
        return value

    @classmethod
    def coerce(cls, value: AttributeSpec | Mapping[str, Any]) -> AttributeSpec:
        """A spec from a settings value (a spec or a mapping of its fields)."""
        if isinstance(value, AttributeSpec):
            return value
        if isinstance(value, Mapping):
            try:
                return cls(**value)
            except TypeError as exc:
                raise ConfigurationError(f"bad connection attribute {value!r}: {exc}") from exc
        raise ConfigurationError(f"a connection attribute is a mapping, not {value!r}")


def attribute_specs(
    value: Iterable[AttributeSpec | Mapping[str, Any]],
) -> tuple[AttributeSpec, ...]:
    """``Config.connection_attributes`` converter: at most 16, unique names."""
    if isinstance(value, (str, Mapping)):
        raise ConfigurationError("connection_attributes must be a list of attribute specs")
    specs = tuple(AttributeSpec.coerce(v) for v in value)
    if len(specs) > MAX_ATTRIBUTES:
        raise ConfigurationError(f"at most {MAX_ATTRIBUTES} connection attributes")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigurationError("connection attribute names must be unique")
    return specs


def read_attributes(
    specs: Iterable[AttributeSpec],
    query: Mapping[str, str],
    headers: Mapping[str, str],
    repeated: Iterable[str] = (),
) -> dict[str, str]:
    """The validated attributes of a ``$connect`` (``InvalidAttribute`` on a bad one)."""
    repeated = frozenset(repeated)
    out: dict[str, str] = {}
    for spec in specs:
        source = headers if spec.source == "header" else query
        if spec.source == "query" and spec.lookup_key in repeated:
            raise InvalidAttribute(f"Repeated query parameter: {spec.lookup_key}.")
        value = source.get(spec.lookup_key)
        if value is None or value == "":
            if spec.required:
                raise InvalidAttribute(f"Missing connection attribute {spec.name!r}.")
            if spec.default is not None:
                out[spec.name] = spec.default
            continue
        out[spec.name] = spec.check(value)
    return out


def check_filter(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """A send's attribute filter, checked (``ValueError``): names as declared attributes
    are named, string values of at most 200 characters."""
    out: dict[str, str] = {}
    for name, value in (attributes or {}).items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"attribute filter names are [a-z][a-z0-9_]{{0,31}}: {name!r}")
        if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"attribute filter values are strings: {name}={value!r}")
        out[name] = value
    return out
