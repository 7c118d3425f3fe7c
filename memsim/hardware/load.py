"""Loading hardware YAML into a System, with errors that name the file, the key path and the form."""
from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from memsim.errors import MemsimError
from memsim.hardware.schema import System


def shipped_configs() -> dict[str, Path]:
    """The hardware configs that ship with memsim, by name (file stem)."""
    folder = resources.files("memsim.hwconfigs")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def resolve_path(name_or_path: str | Path) -> Path:
    """A path as given, or the name of a shipped config such as 'nvidia-h100-sxm'."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_configs()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    close = difflib.get_close_matches(str(name_or_path), list(shipped), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; shipped configs: {', '.join(sorted(shipped))}"
    raise MemsimError(f"{name_or_path}: no such file or shipped hardware config{hint}")


def load_system(name_or_path: str | Path, overrides: dict[str, object] | None = None) -> System:
    """Read, override and validate a hardware YAML file.

    `overrides` maps dotted key paths to new values ('devices.gpu.memories.hbm.bandwidth':
    '4 TB/s'); overriding a key that does not exist is an error, never a silent addition.
    """
    path = resolve_path(name_or_path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise MemsimError(f"{path}: cannot read ({error})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise MemsimError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise MemsimError(f"{path}: expected a mapping of keys at the top level (name:, devices:, links:), "
                          f"found {type(raw).__name__}")
    if overrides:
        raw = apply_overrides(raw, overrides, path)
    return validate_system(raw, path)


def validate_system(raw: dict, origin: str | Path = "<dict>") -> System:
    try:
        return System.model_validate(raw)
    except ValidationError as error:
        raise MemsimError(f"{origin}: {describe_error(error.errors()[0], raw)}") from None


def apply_overrides(raw: dict, overrides: dict[str, object], origin: str | Path) -> dict:
    raw = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = raw
        keys = dotted.split(".")
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                known = list(node) if isinstance(node, dict) else []
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                where = ".".join(keys[: depth + 1])
                raise MemsimError(f"{origin}: override {where}: no such key{hint}")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                node = node[key]
    return raw


def describe_error(err: dict, raw: object) -> str:
    """Turn one pydantic error into 'key.path: what is wrong (expected form)'."""
    loc = [str(part) for part in err["loc"]]
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "unknown_key":
        return f"{'.'.join(loc + [ctx['key']])}: unknown key{ctx['hint']}"
    message = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if kind == "missing":
        message = f"missing required key{_example_for(loc)}"
    elif kind == "literal_error":
        message = f"{_given(raw, loc)} is not allowed ({message.replace('Input should be', 'expected')})"
    elif kind in ("dict_type", "model_type"):
        message = f"expected a mapping of keys, found {_given(raw, loc)}"
    elif kind.endswith("_parsing") or kind.endswith("_type"):
        message = f"{_given(raw, loc)}: {message.replace('Input should be', 'expected')}"
    path = ".".join(loc)
    return f"{path}: {message}" if path else message


def _given(raw: object, loc: list[str]) -> str:
    node = raw
    for key in loc:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return "the value"
    return repr(node)


def _example_for(loc: list[str]) -> str:
    """An example of the missing key's form, read from the schema."""
    model = System
    field = None
    for key in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None:
            break
        if key in fields:
            field = fields[key]
            annotation = field.annotation
            model = _model_inside(annotation)
        # a key not among the fields is a dict key (a device or tier name): stay on the model
    if field is None:
        return ""
    example = (field.json_schema_extra or {}).get("example") if isinstance(field.json_schema_extra, dict) else None
    for meta in field.metadata:
        extra = getattr(meta, "json_schema_extra", None)
        if isinstance(extra, dict) and "example" in extra:
            example = extra["example"]
    return f" (e.g. '{example}')" if example else ""


def _model_inside(annotation):
    """The pydantic model a field holds directly or as the values of a dict."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
            return candidate
    return None
