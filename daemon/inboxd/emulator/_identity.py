"""GET /v3/whoami: who the key belongs to. The 3.x client's command line (`tg`) asks it before
any command to learn the key's project; the emulator's one key is a project API key of one
made-up organization and project, so `tg files ...` and `tg batches ...` run against it offline.
The answer has the shape of the client's `WhoamiProjectAPIKey` (type "project_api_key")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._routing import Api

if TYPE_CHECKING:
    from ._request import Request

ROOT = "/v3/whoami"
IDENTITY_ANSWER = {
    "type": "project_api_key",
    "api_key": {"id": "key-emulator"},
    "organization": {"id": "org-emulator", "name": "inboxd emulator"},
    "project": {"id": "proj-emulator", "name": "inboxd emulator", "slug": "inboxd-emulator"},
}


def match(method: str, path: str) -> tuple[str, str | None]:
    return ("whoami" if (method, path) == ("GET", ROOT) else "unknown"), None


def whoami(h: Request, path_id: str | None, query: dict[str, str]) -> None:
    h.send(200, IDENTITY_ANSWER)


IDENTITY = Api(root=ROOT, match=match, routes={"whoami": whoami})
