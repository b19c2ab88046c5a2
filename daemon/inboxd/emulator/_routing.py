"""What an API under /v1 gives the handler: the root path it owns, how a request maps to a
route name, and its routes (a table from route name to function).

Adding an API (say /v1/batches) is one module that builds an `Api`, and one entry in
`_handler.APIS`. Route names are what scripts, stats and status counts use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._request import Request

# (the request, the id taken from the path or None, the query string's fields)
RouteFn = Callable[["Request", "str | None", "dict[str, str]"], None]


@dataclass(frozen=True)
class Api:
    root: str  # this path and everything under it belong to the API
    match: Callable[[str, str], tuple[str, str | None]]  # (method, path) -> (route name, id); "unknown"
    routes: dict[str, RouteFn]

    def owns(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def route(self, method: str, path: str) -> tuple[str, str | None, RouteFn]:
        name, path_id = self.match(method, path)
        return name, path_id, self.routes.get(name, unknown)


def unknown(h: Request, path_id: str | None, query: dict[str, str]) -> None:
    h.error(404, "no such route")
