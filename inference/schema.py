"""The one source of a model's input schema: the signature of its `predict`, read from source.

Reading the source (not importing it) lets `build.py` render a model's form without torch or a
GPU, and the server validates with the very same `InputSchema`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.errors import ConfigError, InvalidInput
from inference.predictor import MISSING

_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_FILES = {"Path": "file", "File": "file", "Image": "image", "PIL.Image.Image": "image", "ImageBytes": "image"}
_INPUT_KEYS = {"default", "description", "ge", "le", "min_length", "max_length", "regex", "choices"}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # string | integer | number | boolean | file | image
    order: int
    default: Any = MISSING
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[Any] | None = None
    encoded: bool = False  # an image handed over as its checked, undecoded bytes (ImageBytes)

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def is_file(self) -> bool:
        return self.kind in ("file", "image")

    def json_schema(self) -> dict[str, Any]:
        prop: dict[str, Any] = {"title": self.name.replace("_", " ").title(), "x-order": self.order}
        if self.is_file:
            prop.update(type="string", format="uri")
            if self.kind == "image":
                prop["contentMediaType"] = "image/*"
        else:
            prop["type"] = self.kind
        for key in ("description", "regex"):
            if getattr(self, key) is not None:
                prop["pattern" if key == "regex" else key] = getattr(self, key)
        for key, name in (
            ("ge", "minimum"),
            ("le", "maximum"),
            ("min_length", "minLength"),
            ("max_length", "maxLength"),
        ):
            if getattr(self, key) is not None:
                prop[name] = getattr(self, key)
        if self.choices is not None:
            prop["enum"] = list(self.choices)
        if not self.required:
            prop["default"] = self.default
        return prop

    def check(self, value: Any) -> Any:
        where = f"input '{self.name}'"
        if self.is_file:
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"{where} must be a data URL or a file URL, got {_show(value)}")
            return value
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise InvalidInput(f"{where} must be true or false, got {_show(value)}")
        elif self.kind == "integer":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{where} must be an integer, got {_show(value)}")
        elif self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"{where} must be a number, got {_show(value)}")
            value = float(value)
        elif self.kind == "string" and not isinstance(value, str):
            raise InvalidInput(f"{where} must be a string, got {_show(value)}")
        if self.ge is not None and value < self.ge:
            raise InvalidInput(f"{where} must be at least {self.ge}, got {value}")
        if self.le is not None and value > self.le:
            raise InvalidInput(f"{where} must be at most {self.le}, got {value}")
        if self.min_length is not None and len(value) < self.min_length:
            raise InvalidInput(f"{where} must be at least {self.min_length} characters long")
        if self.max_length is not None and len(value) > self.max_length:
            raise InvalidInput(f"{where} must be at most {self.max_length} characters long")
        if self.regex is not None and not re.fullmatch(self.regex, value):
            raise InvalidInput(f"{where} must match {self.regex}")
        if self.choices is not None and value not in self.choices:
            raise InvalidInput(f"{where} must be one of {self.choices}, got {_show(value)}")
        return value


@dataclass(frozen=True)
class InputSchema:
    fields: list[Field] = field(default_factory=list)

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "title": "Input",
            "properties": {f.name: f.json_schema() for f in self.fields},
            "required": [f.name for f in self.fields if f.required],
        }

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def validate(self, raw: Any) -> dict[str, Any]:
        """Checks `raw` against the schema; returns it with defaults filled in.

        File and image values are returned as given (a URL); files.py resolves them.
        """
        if not isinstance(raw, dict):
            raise InvalidInput(f"'input' must be a JSON object, got {_show(raw)}")
        known = {f.name for f in self.fields}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"unknown input '{unknown[0]}'; this model takes {sorted(known)}")
        values: dict[str, Any] = {}
        for f in self.fields:
            if f.name in raw and raw[f.name] is not None:
                values[f.name] = f.check(raw[f.name])
            elif f.required:
                raise InvalidInput(f"input '{f.name}' is required")
            else:
                values[f.name] = f.default
        return values


def read_schema(predict_py: Path, class_name: str = "Predictor") -> InputSchema:
    """Reads the input schema from the `predict` signature of `class_name` in `predict_py`."""
    try:
        tree = ast.parse(predict_py.read_text(encoding="utf-8"), filename=str(predict_py))
    except FileNotFoundError:
        raise ConfigError(f"{predict_py} does not exist: the manifest's predictor names it") from None
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{predict_py} is not valid Python: {exc}") from None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "predict":
                    return _schema_of(item, predict_py)
            raise ConfigError(f"{predict_py}: class {class_name} has no predict method")
    raise ConfigError(f"{predict_py}: no class named {class_name}")


def _schema_of(fn: ast.FunctionDef, where: Path) -> InputSchema:
    args = fn.args.args[1:]  # drop self
    defaults: list[ast.expr | None] = [None] * (len(args) - len(fn.args.defaults))
    defaults += list(fn.args.defaults)
    args += fn.args.kwonlyargs
    defaults += list(fn.args.kw_defaults)
    fields = []
    for order, (arg, default) in enumerate(zip(args, defaults, strict=True)):
        if arg.annotation is None:
            raise ConfigError(f"{where}: predict argument '{arg.arg}' has no type annotation")
        type_name = ast.unparse(arg.annotation)
        kind = _SCALARS.get(type_name) or _FILES.get(type_name)
        if kind is None:
            raise ConfigError(f"{where}: predict argument '{arg.arg}' has unsupported type {type_name}")
        fields.append(
            Field(arg.arg, kind, order, **_options_of(default, where), encoded=type_name == "ImageBytes")
        )
    return InputSchema(fields)


def _options_of(default: ast.expr | None, where: Path) -> dict[str, Any]:
    if default is None:
        return {}
    if isinstance(default, ast.Call) and ast.unparse(default.func).split(".")[-1] == "Input":
        options: dict[str, Any] = {}
        if default.args:
            options["default"] = ast.literal_eval(default.args[0])
        for kw in default.keywords:
            if kw.arg in _INPUT_KEYS:
                options[kw.arg] = ast.literal_eval(kw.value)
        return options
    try:
        return {"default": ast.literal_eval(default)}
    except ValueError as exc:
        raise ConfigError(f"{where}: predict defaults must be literals ({exc})") from None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
