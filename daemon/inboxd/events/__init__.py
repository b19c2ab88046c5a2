"""Events for schedulers on other hosts (SPEC §11): each published sidecar (a manifest, an
error sidecar, a batch.json) announced to the `[[events]]` sinks that want its type, as a
Standard Webhooks POST or on a command's stdin; durable (recorded with the stage that
publishes the sidecar), at least once, one owner per event in a fleet.

  payload   the body's pydantic models (the shipped schemas/event.schema.json) and builders
  signing   the whsec_ secret and the v1 signature
  store     the `events` table: record, the sender's queue, dead letters, retry
  fleet     the event files that let a survivor send a dead host's pending events
  sinks     webhook and command: one attempt each
  service   the daemon's hooks, one sender thread per sink, backlog for metrics and health
"""

from .service import Events, ping
from .signing import read_secret
from .store import EventStore

__all__ = ["EventStore", "Events", "ping", "read_secret"]
