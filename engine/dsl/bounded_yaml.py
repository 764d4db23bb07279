"""Bounded YAML: files from people and tools, parsed without letting one of them stop the process.

PyYAML's safe loader still expands aliases without limit (a 600-byte "billion laughs" file took
23 s and 1.6 GB here) and composes recursively (600 levels of nesting are a RecursionError). This
module bounds all three before anything is constructed:

- size: at most `MAX_FILE_BYTES` (256 KiB); a larger file is refused unread;
- nesting: at most `MAX_DEPTH` (64) levels, checked while composing;
- aliases: allowed, but the composed node graph is walked as if expanded, and more than
  `MAX_ALIAS_NODES` (10,000) revisited nodes, or an alias to the node that holds it, is refused.
  A budget rather than a ban keeps small legitimate reuse working; counting revisits (not all
  nodes) keeps big alias-free files working.

Parsing uses libyaml's event parser when PyYAML has it (about 5× faster); composing and
constructing stay in PyYAML's safe Python code, so the depth guard holds. `load_yaml` is the one
call for a single-document file (`compose_yaml` also gives its node, for lines); `engine.dsl.triggers`
composes documents itself to version them.

Where a mistake is: `node_line` finds the line of a path (pydantic's `loc`) in a composed node,
`validation_issues` turns a pydantic ValidationError into one `YamlIssue` (file, path, line,
message) per problem — what trigger files and the policy file report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from engine.errors import UserError

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "BoundedLoader",
    "Expansion",
    "TooBig",
    "YamlIssue",
    "YamlProblem",
    "compose_yaml",
    "load_yaml",
    "load_yaml_file",
    "node_line",
    "read_yaml_text",
    "validation_issues",
    "walk_expanded",
    "yaml_line",
    "yaml_message",
    "yaml_path",
]

MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000


class YamlProblem(UserError):
    """A YAML text that cannot be loaded: `source`, `line` (when known) and a one-line message."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")
        self.source, self.line, self.message = source, line, message


def load_yaml(text: str, source: str = "<string>") -> Any:
    """The one document of `text`, loaded within the bounds above; raises YamlProblem."""
    return compose_yaml(text, source)[1]


def compose_yaml(text: str, source: str = "<string>") -> tuple[yaml.Node | None, Any]:
    """The one document of `text` as its composed node (for `node_line`) and its data, loaded
    within the bounds above; raises YamlProblem."""
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise YamlProblem(source, None, f"file too large (over {MAX_FILE_BYTES // 1024} KiB)")
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        walk_expanded(node, Expansion())
        return node, loader.construct_document(node)
    except TooBig as exc:
        raise YamlProblem(source, exc.line, exc.message) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(source, yaml_line(exc), yaml_message(exc)) from None
    except RecursionError:  # a safety net: the depth guards should make this unreachable
        raise YamlProblem(source, None, f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError) as exc:  # an integer of 5,000 digits, an unhashable key …
        raise YamlProblem(source, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """`load_yaml` of a file, refusing one too large (unread), unreadable or not UTF-8."""
    return load_yaml(read_yaml_text(path), str(path))


def read_yaml_text(path: Path) -> str:
    """The text of a YAML file; YamlProblem when it is too large (unread), unreadable or not
    UTF-8."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise YamlProblem(
                str(path), None, f"file too large (over {MAX_FILE_BYTES // 1024} KiB)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise YamlProblem(str(path), None, f"cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlProblem(str(path), line, f"not UTF-8 text (byte {exc.start})") from None


@dataclass(frozen=True)
class YamlIssue:
    """One problem in a YAML file: the file, the path inside it, its line (when known), what."""

    file: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top)'}: {self.message}"


def validation_issues(exc: ValidationError, node: yaml.Node, source: str) -> list[YamlIssue]:
    """One issue per problem pydantic found in the data composed from `node`, at its line, in
    words a person writing the file reads (``unknown key``, ``is required``)."""
    issues = []
    for problem in exc.errors(include_url=False):
        loc = tuple(problem["loc"])
        msg = problem["msg"].removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":  # a mapping's key refused: say so at the key
            loc, msg = loc[:-1], f"not a valid name here: {msg}"
        if problem["type"] == "extra_forbidden":
            msg = "unknown key"
        elif problem["type"] == "missing":
            msg = "is required"
        issues.append(YamlIssue(source, yaml_path(loc), node_line(node, loc), msg))
    return issues


def yaml_path(loc: tuple[Any, ...]) -> str:
    """A path as people write it: ``actions[0].send_email.template`` (``if_`` is ``if``)."""
    text = ""
    for part in loc:
        part = "if" if part == "if_" else part
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def node_line(node: yaml.Node, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node that `loc` reaches."""
    current = node
    for part in loc:
        part = "if" if part == "if_" else part
        if isinstance(current, yaml.MappingNode):
            match = next((v for k, v in current.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in current.value if k.value == part), None)
                return (key or current).start_mark.line + 1
            current = match
        elif (
            isinstance(current, yaml.SequenceNode)
            and isinstance(part, int)
            and part < len(current.value)
        ):
            current = current.value[part]
        else:
            break
    return current.start_mark.line + 1


class TooDeep(yaml.composer.ComposerError):
    """Nesting beyond MAX_DEPTH: valid YAML, refused."""


if TYPE_CHECKING:
    from yaml._yaml import CParser  # what yaml.cyaml re-exports (its stub does not export it)
else:
    try:
        from yaml._yaml import CParser
    except ImportError:  # pragma: no cover - PyYAML built without libyaml
        CParser = None

if TYPE_CHECKING or CParser is not None:

    class SafeLoader(yaml.composer.Composer, CParser, SafeConstructor, Resolver):
        """libyaml's parser (events, ~5x faster) under PyYAML's own composer and safe constructor.

        Composing in Python rather than in libyaml keeps the depth guard below in force.
        """

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml
    SafeLoader = yaml.SafeLoader


class BoundedLoader(SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_DEPTH while it composes.

    The composer recurses once per level, so without this a 600-deep file is a RecursionError.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()  # the node's start event: composing one means it is there
            mark = event.start_mark if event is not None else None
            # types-PyYAML types the error's mark as yaml.error.Mark only, but libyaml's events
            # carry yaml._yaml.Mark (same line/column fields), which PyYAML passes to errors too.
            raise TooDeep(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)  # type: ignore[arg-type]
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class Expansion:
    """What the alias walk has seen: nodes per document (anchors do not cross documents, and ids
    of a finished document's nodes are reused), revisits per file (the budget is per file)."""

    seen: set[int] = field(default_factory=set)
    revisits: int = 0


class TooBig(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.message, self.line = message, node.start_mark.line + 1


def walk_expanded(root: yaml.Node, expansion: Expansion, depth: int = 1) -> list[tuple[int, int]]:
    """Walk `root` as if its aliases were expanded, iteratively, within the depth and alias budget.

    Returns the text spans of nodes it reaches outside its own text (the anchors it borrows), for
    its version; raises TooBig on a cycle, nesting beyond MAX_DEPTH or more than MAX_ALIAS_NODES
    revisited nodes.
    """
    start, end = root.start_mark.index, root.end_mark.index
    borrowed: set[tuple[int, int]] = set()
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, Iterator[yaml.Node]]] = []

    def enter(node: yaml.Node) -> None:
        if id(node) in on_path:
            raise TooBig("an alias refers to the collection that holds it (a cycle)", node)
        if id(node) in expansion.seen:
            expansion.revisits += 1
            if expansion.revisits > MAX_ALIAS_NODES:
                raise TooBig(
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} repeated nodes "
                    "(an alias bomb?)",
                    node,
                )
        else:
            expansion.seen.add(id(node))
        if depth + len(stack) > MAX_DEPTH:
            raise TooBig(f"nested deeper than {MAX_DEPTH} levels (through aliases)", node)
        if node.start_mark.index < start or node.end_mark.index > end:
            borrowed.add((node.start_mark.index, node.end_mark.index))
        if isinstance(node, yaml.SequenceNode):
            children: Iterator[yaml.Node] = iter(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = (part for pair in node.value for part in pair)
        else:
            return
        stack.append((node, children))
        on_path.add(id(node))

    enter(root)
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            on_path.discard(id(node))
        else:
            enter(child)
    return sorted(borrowed)


def yaml_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark else None


def yaml_message(exc: yaml.YAMLError) -> str:
    """One line: PyYAML's own text spans several, with a snippet of the file."""
    problem = getattr(exc, "problem", None)
    if isinstance(exc, TooDeep):
        return str(problem)
    if not problem:
        return f"not valid YAML: {' '.join(str(exc).split())}"
    context = getattr(exc, "context", None)
    return f"not valid YAML: {problem}" + (f" ({context})" if context else "")
