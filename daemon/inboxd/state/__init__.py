"""The state layer: what inboxd keeps on disk, below `pipeline/` and `batch/`.

`journal` (the local SQLite index, migrations registered by the owner of each table), `fs`
(moves and writes that never lose or overwrite anything), `sidecars` (every manifest, error
sidecar and batch.json, in one byte format).
"""
