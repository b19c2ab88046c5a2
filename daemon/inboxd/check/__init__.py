"""Validation before upload: one streaming pass (bytes, sha256, lines, UTF-8, JSON) and the
rules of each purpose and mode."""

from ._check import check_file
from ._report import CheckIssue, CheckReport
from ._stream import return_large_buffers

__all__ = ["CheckIssue", "CheckReport", "check_file", "return_large_buffers"]
