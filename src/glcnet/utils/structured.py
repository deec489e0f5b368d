"""Dataclass configs on OmegaConf structured configs, with one-line errors.

OmegaConf does the work: the dataclass is the schema, YAML data is merged onto it and
``key=value`` overrides are set in struct mode (an unknown key raises) with type checks
and conversion. This module adds what it does not do: errors as one line naming the key
(an unknown key lists the valid ones), tuple fields back as tuples of their annotated
length (OmegaConf keeps them as lists of any length), and list overrides whose items hold
brackets (``methods=[glcnet,glcnet[method.lam=0.25]]``: YAML's flow lists cannot).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from glcnet.errors import GlcnetError

T = TypeVar("T")

_WORDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def split_top(text: str) -> list[str]:
    """Split ``text`` on the commas outside brackets, braces and quotes; items stripped, empty
    ones dropped: ``"a, b[c,d], {e: 1, f: 2}"`` -> ``["a", "b[c,d]", "{e: 1, f: 2}"]``."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]


def _parse_value(raw: str) -> Any:
    """The value of a ``key=value`` override: YAML, except that a ``[...]`` list is split on its
    top-level commas first, so that items like ``glcnet[method.lam=0.25]`` stay strings
    (YAML's flow lists cannot hold them). Text that is not YAML stays a string."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_parse_value(item) for item in split_top(text[1:-1])]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return raw


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _tuple_length(tp: Any) -> int | None:
    """``N`` of a ``tuple[X1, ..., XN]`` annotation (also inside ``| None``), else None."""
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is tuple:
            return len(typing.get_args(t))
    return None


def _words(tp: Any) -> str:
    """What a field of type ``tp`` takes, in words (for error messages)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None
        return " or ".join("null" if a is type(None) else _words(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if typing.get_origin(tp) in (list, tuple):
        return "a list"
    return _WORDS.get(tp, str(tp))


def _one_line(e: OmegaConfBaseException, node: DictConfig, where: str) -> GlcnetError:
    """OmegaConf's error as one line: ``WHERE: key: problem`` (unknown keys list the valid ones)."""
    at = f"{where}: " if where else ""
    key = str(e.full_key or "")
    if isinstance(e, (ConfigAttributeError, ConfigKeyError)):
        parent, _, name = key.rpartition(".")
        section = OmegaConf.select(node, parent) if parent else node
        valid = ", ".join(map(str, section)) if isinstance(section, DictConfig) else "none"
        return GlcnetError(f"{at}{parent + ': ' if parent else ''}unknown key {name!r} (valid: {valid})")
    if isinstance(e, ValidationError):  # a field of a dataclass, or an item of a list field
        owner = e.object_type
        if isinstance(owner, type) and dataclasses.is_dataclass(owner):
            tp = _hints(owner).get(str(e.key))
        else:  # the list's annotation (``tuple[X, ...]``, ``list[X]``, maybe ``| None``): its item type
            args = [a for a in typing.get_args(e.ref_type) if a is not type(None)]
            args = list(typing.get_args(args[0])) if len(args) == 1 and typing.get_args(args[0]) else args
            tp = args[0] if args else None
        if tp is not None:
            return GlcnetError(f"{at}{key}: expected {_words(tp)}, got {e.value!r}")
    return GlcnetError(f"{at}{key}: {str(e).splitlines()[0]}")


def merge(node: DictConfig, data: Mapping[str, Any], where: str) -> DictConfig:
    """``data`` (nested dict) merged onto ``node``, checked against its schema."""
    try:
        return cast(DictConfig, OmegaConf.merge(node, data))
    except OmegaConfBaseException as e:
        raise _one_line(e, node, where) from None


def override(node: DictConfig, overrides: Sequence[str], where: str) -> DictConfig:
    """``a.b.c=value`` strings applied to ``node`` in order (values: :func:`_parse_value`)."""
    for ov in overrides:
        key, eq, raw = ov.partition("=")
        if not eq:
            raise GlcnetError(f"override {ov!r}: expected key=value (e.g. optim.lr=0.001)")
        key, value = key.strip(), _parse_value(raw)
        current = OmegaConf.select(node, key, default=None)
        if isinstance(current, ListConfig) and value is not None and not isinstance(value, list):
            value = [value]  # seeds=0 means seeds=[0]
        try:
            OmegaConf.update(node, key, value, merge=True)
        except OmegaConfBaseException as e:
            raise _one_line(e, node, where) from None
    return node


def to_object(node: DictConfig, where: str) -> Any:
    """The dataclass instance of ``node``, with tuple fields as tuples of their annotated length
    (OmegaConf holds them as lists of any length)."""

    def tuples(obj: Any, prefix: str) -> None:
        for name, tp in _hints(type(obj)).items():
            value = getattr(obj, name)
            if dataclasses.is_dataclass(value):
                tuples(value, f"{prefix}{name}.")
            elif isinstance(value, list) and (n := _tuple_length(tp)) is not None:
                if len(value) != n:
                    raise GlcnetError(f"{where + ': ' if where else ''}{prefix}{name}: expected a list of {n} "
                                      f"values, got {value!r}")
                setattr(obj, name, tuple(value))

    obj = OmegaConf.to_object(node)
    tuples(obj, "")
    return obj


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict (defaults for what it leaves out)."""
    return cast(T, to_object(merge(OmegaConf.structured(cls), data, where), where))


def load(cls: type[T], data: Mapping[str, Any], overrides: Sequence[str], where: str = "") -> T:
    """Dataclass ``cls``: its defaults <- ``data`` (from the file ``where``) <- ``key=value`` overrides."""
    node = override(merge(OmegaConf.structured(cls), data, where), overrides, "")
    return cast(T, to_object(node, ""))


def with_overrides(cfg: T, overrides: Sequence[str], where: str = "") -> T:
    """A copy of the dataclass ``cfg`` with ``key=value`` overrides applied."""
    if not overrides:  # the experiment asks for many (cell hashes): skip OmegaConf's round trip
        return copy.deepcopy(cfg)
    return cast(T, to_object(override(OmegaConf.structured(cfg), overrides, where), where))


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON (``dataclasses.asdict``: the experiment
    hashes every cell's configs, which OmegaConf's container round trip made quadratic-slow)."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return cast(dict[str, Any], plain(dataclasses.asdict(cfg)))
