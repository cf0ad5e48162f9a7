"""Errors of the control API, all rendered as ``{"error": {"code", "message", "fields"?}}``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, fields: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


def not_found(kind: str, name: str, field: str | None = None) -> ApiError:
    where = f" (field {field})" if field else ""
    fields = [{"path": field, "message": f"{kind} {name!r} not found"}] if field else None
    return ApiError(404, "not_found", f"{kind} {name!r} not found{where}", fields)


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)
