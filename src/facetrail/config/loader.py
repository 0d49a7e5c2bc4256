"""Reading the YAML file: every problem reported with the file, the line and the field.

The YAML is composed into nodes first, so every key and value keeps its
line; pydantic's errors are then mapped back to those lines. Secrets come
from the environment, Frigate-style: ``{FACETRAIL_MQTT_PASSWORD}`` inside a
string is replaced by that variable (only names starting with FACETRAIL_).
YAML aliases (``*name``) are refused: a few of them nested expand to
gigabytes (a "billion laughs"), and a configuration never needs them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from facetrail.config.errors import ConfigError, ConfigProblem
from facetrail.config.schema import FacetrailConfig

ENV_REFERENCE = re.compile(r"\{(FACETRAIL_[A-Z0-9_]+)\}")
Path_ = tuple[str | int, ...]


def load_config(path: Path) -> FacetrailConfig:
    """Read and validate a configuration file; relative paths are taken from the file's folder."""
    source = str(path)
    if not path.exists():
        raise ConfigError(f"{source}: no such file (see examples/config.yml for a start)")
    if path.is_dir():
        raise ConfigError(f"{source}: is a folder, not a configuration file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot be read: {error}") from None
    return parse_config(text, source, base_dir=path.resolve().parent)


def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None) -> FacetrailConfig:
    """Validate YAML text; ``base_dir`` resolves relative paths (default: the working folder)."""
    try:
        node = yaml.compose(text, Loader=_NoAliasLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError.from_problems([ConfigProblem(source, f"not valid YAML: {error.problem}", line)]) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(node, yaml.MappingNode):
        line = node.start_mark.line + 1 if node is not None else None
        raise ConfigError.from_problems([ConfigProblem(source, "the file must be a mapping of settings "
                                                               "(purpose:, cameras:, ...)", line)])
    builder = _Builder(source)
    data = builder.build(node, ())
    problems = list(builder.problems)
    try:
        config = FacetrailConfig.model_validate(data)
    except ValidationError as error:
        problems += [_problem(source, e, builder.lines) for e in error.errors()]
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.field or ""))
        raise ConfigError.from_problems(problems)
    return _resolve_paths(config, base_dir or Path.cwd())


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases as it meets them (before anything is expanded)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed here; write the value out in full",
                event.start_mark)
        return super().compose_node(parent, index)


class _Builder:
    """Turns YAML nodes into plain data, remembering each path's line, substituting secrets."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.problems: list[ConfigProblem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            if _unquoted_secret(node):
                self._problem(node, path, "a {FACETRAIL_...} reference must be in quotes, e.g. "
                                          "password: \"{FACETRAIL_MQTT_PASSWORD}\"")
                return None
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int):
                    self._problem(key_node, path, "keys must be names")
                    continue
                if key in out:
                    self._problem(key_node, (*path, key), "this key appears twice")
                    continue
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self._constructor.construct_object(node, deep=True)
        return self._substitute(value, node, path) if isinstance(value, str) else value

    def _substitute(self, value: str, node: yaml.Node, path: Path_) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            found = os.environ.get(name)
            if found is None:
                self._problem(node, path, f"the environment variable {name} is not set")
                return ""
            return found

        return ENV_REFERENCE.sub(replace, value)

    def _problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        self.problems.append(ConfigProblem(self.source, message, node.start_mark.line + 1,
                                           node.start_mark.column + 1, _dotted(path)))


def _unquoted_secret(node: yaml.MappingNode) -> bool:
    """YAML reads an unquoted {FACETRAIL_X} as a one-key mapping with no value."""
    if len(node.value) != 1:
        return False
    key, value = node.value[0]
    return (isinstance(key, yaml.ScalarNode) and bool(re.fullmatch(r"FACETRAIL_[A-Z0-9_]+", str(key.value)))
            and isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"))


def _problem(source: str, error: Any, lines: dict[Path_, int]) -> ConfigProblem:
    loc: Path_ = tuple(error.get("loc", ()))
    line = None
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            line = lines[loc[:end]]
            break
    message = str(error.get("msg", "invalid"))
    if error.get("type") in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's, a dataclass's
        message = "unknown setting (check the spelling; `facetrail config schema` lists every setting)"
    elif error.get("type") == "missing":
        message = "this setting is required"
    message = message.removeprefix("Value error, ")
    return ConfigProblem(source, message, line, None, _dotted(loc) or None)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _resolve_paths(config: FacetrailConfig, base: Path) -> FacetrailConfig:
    if not config.data_dir.is_absolute():
        config.data_dir = (base / config.data_dir).resolve()
    for camera in config.cameras.values():
        camera.inputs = [source if source.is_stream or Path(source.path).is_absolute()
                         else dataclasses.replace(source, path=str((base / source.path).resolve()))
                         for source in camera.inputs]
    return config
