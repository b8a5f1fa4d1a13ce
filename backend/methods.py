"""Which methods a path allows, as the OpenAPI schema documents them.

Starlette answers a method a path does not take with 405 and an ``Allow`` header naming only
the first route whose path pattern matched, which for ``POST /samples/flags`` is ``GET
/samples/{sample_id}`` (the id is validated later): the header then advertised GET for a path
that takes POST only. Matching the documented path templates, with integer parameters checked
as integers, names exactly what the path takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_PARAMETER = re.compile(r"\{([^}/]+)\}")


class DocumentedMethods:
    """``allowed(path)``: the methods the schema documents for ``path`` (HEAD with GET);
    empty for a path outside the schema. ``schema`` is called once, on first use."""

    def __init__(self, schema: Callable[[], dict[str, Any]]) -> None:
        self._schema = schema
        self._templates: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    def allowed(self, path: str) -> frozenset[str]:
        methods: set[str] = set()
        for pattern, documented in self._compiled():
            if pattern.fullmatch(path):
                methods |= documented
        if "GET" in methods:
            methods.add("HEAD")
        return frozenset(methods)

    def _compiled(self) -> list[tuple[re.Pattern[str], frozenset[str]]]:
        if self._templates is None:
            self._templates = [
                (_pattern(template, operations), frozenset(m.upper() for m in operations))
                for template, operations in self._schema().get("paths", {}).items()
            ]
        return self._templates


def _pattern(template: str, operations: dict[str, Any]) -> re.Pattern[str]:
    integers = {
        parameter["name"]
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter.get("in") == "path" and parameter.get("schema", {}).get("type") == "integer"
    }
    parts, last = [], 0
    for match in _PARAMETER.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(r"-?\d+" if match.group(1) in integers else r"[^/]+")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts))
