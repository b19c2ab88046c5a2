"""Validation before upload: one streaming pass (bytes, sha256, lines, UTF-8, JSON) and the
rules of each purpose and mode."""

from ._check import check_file
from ._report import CheckIssue, CheckReport

__all__ = ["CheckIssue", "CheckReport", "check_file"]
