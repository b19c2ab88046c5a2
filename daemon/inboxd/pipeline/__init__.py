"""The pipeline: claim -> check -> upload -> archive -> manifest, and the daemon loop.

Reading order for one file: `daemon` (the loop: ready -> claim), `claim`, `work` (the queue),
`workers`, `process` (check and upload), `archive` (done/ or failed/), `sidecars`, with
`journal` recording each stage before the step that cannot be undone.
"""
