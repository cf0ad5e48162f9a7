"""Errors of the control API, all rendered as ``{"error": {"code", "message", "fields"?}}``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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


# -- the envelope in the OpenAPI document ---------------------------------------------------


class FieldProblem(BaseModel):
    path: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldProblem] | None = None


class ErrorBody(BaseModel):
    """Every error of the control API: ``{"error": {"code", "message", "fields"?}}``."""

    error: ErrorDetail


_MEANINGS = {
    401: "Missing or wrong bearer token.",
    404: "The resource, or one it refers to (named in `fields`), does not exist.",
    409: "Conflicts with the current state: exists already, in use, a colliding route.",
    413: "The body is larger than the API accepts.",
    422: "The request does not validate (malformed JSON included); `fields` names each problem.",
    502: "The router, which the call goes through, could not be reached.",
    507: "The disk of the platform's data dir is full (`storage_full`); reads still work.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the statuses a route can answer with the error envelope."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}
