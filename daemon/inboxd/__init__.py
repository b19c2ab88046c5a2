"""inboxd: watch inbox folders and upload JSONL files to the Together Files API.

The flow of one file, and the package that owns each step:
event (`watch`) -> ready (`watch`) -> claim (`pipeline`) -> check (`check`)
-> upload (`api`) -> archive and manifest (`pipeline`).
"""

__version__ = "0.1.0"
