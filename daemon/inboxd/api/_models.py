"""The file object of the Files API, as either official client's server sends it."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class FileObject(BaseModel):
    """Accepts `type` or `FileType`, `LineCount`/`line_count`, `Processed`/`processed`; keeps unknown fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    object: str = "file"
    created_at: int | None = None
    type: str | None = Field(None, validation_alias=AliasChoices("type", "FileType", "file_type"))
    purpose: str | None = None
    filename: str | None = None
    bytes: int | None = None
    line_count: int | None = Field(None, validation_alias=AliasChoices("line_count", "LineCount"))
    processed: bool | None = Field(None, validation_alias=AliasChoices("processed", "Processed"))
    processing_status: str | None = None
    validation_report: dict[str, Any] | None = None

    def manifest_dict(self) -> dict[str, Any]:
        """The `file` object of the manifest (SPEC §3)."""
        out: dict[str, Any] = {
            "id": self.id, "object": self.object, "created_at": self.created_at, "type": self.type,
            "purpose": self.purpose, "filename": self.filename, "bytes": self.bytes,
            "line_count": self.line_count, "processed": self.processed,
            "processing_status": self.processing_status,
        }
        if self.validation_report is not None:
            out["validation_report"] = self.validation_report
        return out
