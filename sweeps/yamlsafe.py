"""A strict YAML reader for specs: PyYAML's SafeLoader, narrowed.

- Duplicate keys in a mapping are reported with their full path (PyYAML silently keeps the last).
- Only the core schema's tags are accepted (str, int, float, bool, null, map, seq); !!binary,
  !!set, !!omap, !!pairs, !!timestamp and every custom or python tag are refused. Dates stay strings.
- Floats are read as YAML 1.2 reads them, so `1e-3` is a number (YAML 1.1 reads it as a string).
- Aliases may not expand a document beyond MAX_NODES nodes ("billion laughs"), and recursive
  structures are refused.
"""
from __future__ import annotations

import re

import yaml

MAX_NODES = 200_000
_CORE = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}


class YamlProblem(ValueError):
    """The text is not a spec YAML can describe; `lines` holds one message per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class _Loader(yaml.SafeLoader):
    yaml_constructors = {k: v for k, v in yaml.SafeLoader.yaml_constructors.items() if k in _CORE or k is None}
    yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
        for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_undefined(self, node):
        raise yaml.constructor.ConstructorError(
            None, None, f"tag {node.tag!r} is not allowed in a spec (plain YAML values only)", node.start_mark)


_Loader.add_constructor(None, _Loader.construct_undefined)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*|[0-9][0-9_]*)[eE][-+]?[0-9]+$"), list("-+0123456789."))


def _duplicates(node, path: str, out: list, seen_nodes: set) -> list[str]:
    """'spec field `base.lr` ...' for every key that appears twice in one mapping (PyYAML keeps
    the last silently), found on the composed node tree so the full path can be named. A node
    reached again through an alias is not walked again (no alias expansion; no recursion)."""
    if id(node) in seen_nodes:
        return out
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
                continue
            sub = f"{path}.{k.value}" if path else k.value
            if k.value in seen:
                out.append(f"spec field `{sub}` (line {k.start_mark.line + 1}): duplicate key, also at line "
                           f"{seen[k.value] + 1}; a key may appear once per mapping")
            seen.setdefault(k.value, k.start_mark.line)
            _duplicates(v, sub, out, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _duplicates(v, f"{path}[{i}]", out, seen_nodes)
    return out


def _size(obj, memo: dict, active: set) -> int:
    """Nodes of the fully expanded document (aliases counted each time they are used)."""
    if not isinstance(obj, (dict, list)):
        return 1
    i = id(obj)
    if i in active:
        raise YamlProblem(["refers to itself (a recursive alias); write the values out"])
    if i not in memo:
        active.add(i)
        items = list(obj.keys()) + list(obj.values()) if isinstance(obj, dict) else obj
        memo[i] = 1 + sum(_size(v, memo, active) for v in items)
        active.discard(i)
    return memo[i]


def load_yaml(text: str, where: str = "spec"):
    """Parse `text` strictly: (data, duplicate-key problems), or YamlProblem when it cannot be read."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        dups = _duplicates(node, "", [], set()) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise YamlProblem([f"{where} is not valid YAML: {' '.join(str(e).split())}"]) from None
    except RecursionError:
        raise YamlProblem([f"{where} is nested too deeply to be a spec"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    try:
        size = _size(data, {}, set())
    except YamlProblem as e:
        raise YamlProblem([f"{where} {e}"]) from None
    if size > MAX_NODES:
        raise YamlProblem([f"{where} expands to more than {MAX_NODES} values through aliases; write a smaller spec"])
    return data, dups
