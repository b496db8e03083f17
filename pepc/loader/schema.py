"""JSON Schema validation (draft 2020-12) with findings at the exact node.

The schema files in the top-level `schema/` directory are the reference of
the document shapes; jsonschema's errors are translated into findings at the
location of the offending key or value, with messages written for people
(and a "did you mean" for unknown keys and misspelt values).
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any, Iterable

import fastjsonschema
import jsonschema
import jsonschema.exceptions
from referencing import Registry, Resource

from pepc.policy.diagnostics import Finding
from pepc.loader.reader import Marks, Pos

from pepc.policy.resources import SCHEMA_DIR  # noqa: E402
SCHEMA_FILES = ("policy-set.schema.json", "legacy-policy.schema.json", "config.schema.json")


@functools.cache
def _registry() -> Registry:
    resources = []
    for name in SCHEMA_FILES:
        contents = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@functools.cache
def schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    s = schema(name)
    cls = jsonschema.validators.validator_for(s)
    cls.check_schema(s)
    return cls(s, registry=_registry())


@functools.cache
def fast_validator(name: str):
    """The same schema compiled to Python by fastjsonschema: ~50x faster, but
    it stops at the first error and words errors for machines. Used only to
    say "valid" quickly; any document it rejects is validated again by
    jsonschema, which reports every error (see findings_for)."""
    by_uri = {schema(n.removesuffix(".schema.json"))["$id"]: schema(n.removesuffix(".schema.json")) for n in SCHEMA_FILES}
    return fastjsonschema.compile(
        schema(name),
        handlers={"https": lambda uri: by_uri[uri.split("#")[0]]},
        use_default=False,
        use_formats=False,
    )


def is_valid_fast(name: str, instance: Any) -> bool:
    try:
        fast_validator(name)(instance)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}


def _type_of(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}


def _path_text(path: list) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += ("." if out else "") + str(step)
    return out


def _known_keys(schema_node: dict) -> list[str]:
    return list(schema_node.get("properties", {}))


def _resolve(schema_node: Any, root: dict) -> Any:
    """Follow a local or cross-file $ref, for looking up the keys a mapping may have."""
    seen = 0
    while isinstance(schema_node, dict) and "$ref" in schema_node and seen < 8:
        ref = schema_node["$ref"]
        doc_name, _, pointer = ref.partition("#")
        doc = root if not doc_name else schema(doc_name.removesuffix(".schema.json"))
        node: Any = doc
        for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
            node = node[part]
        schema_node, root = node, doc
        seen += 1
    return schema_node


def findings_for(
    name: str,
    instance: Any,
    marks: Marks,
    root_pos: Pos,
    *,
    prefix: tuple = (),
    code: str = "schema",
    unknown_code: str = "unknown-key",
) -> list[tuple[tuple, Finding]]:
    """Validate `instance` against schema `name`; each finding with the path
    (within the document, `prefix` + jsonschema's path) it is about."""
    if is_valid_fast(name, instance):
        return []
    out: list[tuple[tuple, Finding]] = []
    for err in validator(name).iter_errors(instance):
        out.extend(_translate(err, instance, marks, root_pos, prefix, code, unknown_code))
    return out


def _translate(err, root_instance, marks, root_pos, prefix, code, unknown_code) -> list[tuple[tuple, Finding]]:
    path = list(err.absolute_path)
    where = tuple(prefix) + tuple(path)
    label = _path_text(list(prefix) + path)
    about = f"{label}: " if label else ""
    kind = err.validator
    value = err.instance

    def at(p: list, *, key: bool = False):
        return marks.loc(marks.path_pos(root_instance, root_pos, p, key=key))

    if kind == "additionalProperties" and isinstance(value, dict):
        schema_node = err.schema
        known = _known_keys(schema_node)
        out = []
        for k in value:
            if k in known:
                continue
            guess = did_you_mean(k, known)
            message = f"{about}unknown key {k!r}" if label else f"unknown key {k!r}"
            if guess:
                message += f"; did you mean {guess!r}?"
            help_text = f"known keys here: {', '.join(known)}" if known else "no keys are allowed here"
            out.append((where + (k,), Finding(unknown_code, message, at(path + [k], key=True), help=help_text)))
        return out
    if err.relative_schema_path and "propertyNames" in err.relative_schema_path:
        # jsonschema reports the offending name as the instance, at the mapping's path.
        bad = value
        message = f"{about}{bad!r} is not a valid name"
        return [
            (
                where + (bad,),
                Finding(
                    code,
                    message,
                    at(path + [bad], key=True) if isinstance(bad, str) else at(path),
                    help="a name starts with a letter or _ and continues with letters, digits, _ . or -",
                ),
            )
        ]
    if kind == "required" and isinstance(value, dict):
        missing = [r for r in err.validator_value if r not in value]
        return [
            (where, Finding(code, f"{about}missing required key {m!r}" if label else f"missing required key {m!r}", at(path)))
            for m in missing
        ]
    if kind in ("anyOf", "oneOf") and err.context:
        # Prefer the branch whose type fits: "expected a string" is no help
        # for a mapping that has a wrong value inside.
        fitting = [e for e in err.context if not (e.validator == "type" and not e.relative_path)]
        best = jsonschema.exceptions.best_match(fitting or err.context)
        return _translate(best, root_instance, marks, root_pos, prefix, code, unknown_code)

    help_text = None
    if kind == "type":
        wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        names = [_TYPE_NAMES.get(t, t) for t in wanted if t != "null"]
        expected = " or ".join(names) if names else "nothing"
        message = f"{about}expected {expected}, got {_type_of(value)}"
        if "boolean" in wanted and isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            help_text = "write true or false: YAML 1.1's yes/no/on/off are strings in pepc"
        elif ("integer" in wanted or "number" in wanted) and isinstance(value, str):
            help_text = "write a plain decimal number (no leading zeros, no underscores)"
        elif "integer" in wanted and isinstance(value, float):
            help_text = "write a whole number"
    elif kind == "enum":
        choices = [str(c) for c in err.validator_value]
        message = f"{about}{_type_of(value)} is not one of {', '.join(choices)}"
        guess = did_you_mean(str(value), choices) if isinstance(value, str) else None
        if guess:
            message += f"; did you mean {guess!r}?"
    elif kind == "pattern":
        last = path[-1] if path else ""
        if last in ("action", "default_action"):
            choices = ["ALLOW", "BLOCK", "LOG_ONLY", "RATE_LIMIT"] if last == "action" else ["ALLOW", "BLOCK"]
            message = f"{about}{value!r} is not an action: expected {', '.join(choices)}"
            guess = did_you_mean(str(value).upper(), choices)
            if guess:
                message += f"; did you mean {guess!r}?"
        else:
            message = f"{about}{value!r} does not match the pattern {err.validator_value}"
    elif kind in ("minimum", "exclusiveMinimum"):
        message = f"{about}{value!r} is too small (minimum {err.validator_value})"
    elif kind in ("maximum", "exclusiveMaximum"):
        message = f"{about}{value!r} is too large (maximum {err.validator_value})"
    elif kind in ("minLength", "minItems", "minProperties"):
        message = f"{about}must not be empty"
    elif kind == "maxLength":
        message = f"{about}is too long (at most {err.validator_value} characters)"
    elif kind == "maxItems":
        message = f"{about}has too many items (at most {err.validator_value})"
    else:
        message = f"{about}{err.message}"
    return [(where, Finding(code, message, at(path), help=help_text))]
