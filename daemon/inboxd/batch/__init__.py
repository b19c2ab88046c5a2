"""The batch round trip (SPEC §9-10): create a job exactly once for an uploaded
batch input, follow every job with one poller, and deliver the results into the outbox.

    from inboxd.batch import BatchInput, BatchStore, Poller, create_once, BatchRejected

    store = BatchStore(journal)                         # the journal's `batches` table
    job = create_once(client, store, BatchInput(claim, file_id, inbox_cfg.batch, inbox=inbox_cfg.path,
                                                sha256=sha, dropped_at=t0, uploaded_at=t1))
    rec = store.attach(claim, manifest=manifest_path, input_path=archived_path)
    poller = Poller(lambda: client, store, on_event)    # one thread for all jobs
    poller.start(); poller.resume(); poller.follow(rec)
"""

from ..api._batches import TERMINAL, BatchJob, BatchRejected
from .client import BatchClient
from .create import BatchInput, create_once
from .deliver import deliver
from .poller import Poller
from .store import BatchRecord, BatchStore, stem_of

__all__ = [
    "TERMINAL", "BatchClient", "BatchInput", "BatchJob", "BatchRecord", "BatchRejected", "BatchStore", "Poller",
    "create_once", "deliver", "stem_of",
]
