"""students-courses: a REST API for students, courses and enrolments, in one function.

Routes (through the spec's HTTP triggers, or a direct call of ``/function/school/...``):

    GET    /students                      every student
    POST   /students                      {"name": ..., "email": ...} -> 201
    GET    /students/{id}                 one student
    PUT    /students/{id}                 replace name and email
    DELETE /students/{id}                 -> 204 (their enrolments go too)
    GET    /students/{id}/courses         the courses they take
    ...and the same for /courses ({"code": ..., "title": ...}), plus
    GET    /courses/{id}/students         who takes it
    POST   /courses/{id}/students         {"student_id": ...} enrols -> 201
    DELETE /courses/{id}/students/{sid}   -> 204

Errors are JSON ``{"error": {"code": ..., "message": ...}}``: 400 bad input, 404 unknown, 405
method, 409 conflict (an email or course code taken, an enrolment twice), 503 when the
database cannot be reached.
"""

from __future__ import annotations

import re
from typing import Any

from school_db import Conflict, Cursor, Database, DatabaseDown

from fissile import Context, Request

database = Database()  # once per instance: its connection serves every request

Reply = Any  # what a native function may return: a body, or (body, status)

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
FIELDS = {"students": ("name", "email"), "courses": ("code", "title")}
OTHER = {"students": "courses", "courses": "students"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.allow = allow


def main(request: Request, context: Context) -> Reply:
    parts = [part for part in _own_path(request.path, context.function).split("/") if part]
    try:
        return _dispatch(request, parts)
    except ApiError as exc:
        reply = _error(exc.status, exc.code, str(exc))
        return (*reply, {"allow": exc.allow}) if exc.allow else reply
    except Conflict as exc:
        return _error(409, "conflict", str(exc))
    except DatabaseDown as exc:
        context.logger.error("database unavailable: %s", exc)
        return _error(503, "database_unavailable", str(exc))


def _own_path(path: str, function: str) -> str:
    """The path below the function: a route gives ``/students/7``, a direct call
    ``/function/school/students/7``; both mean the same here."""
    prefix = f"/function/{function}"
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return path


def _dispatch(request: Request, parts: list[str]) -> Reply:
    if not parts or parts[0] not in FIELDS:
        raise ApiError(404, "not_found", f"no such resource: /{'/'.join(parts)}")
    kind, method = parts[0], request.method
    if len(parts) == 1:
        if method == "GET":
            return _list(kind)
        if method == "POST":
            return _create(kind, _body(request, kind)), 201
        raise _method(method, "GET, POST")
    ident = _ident(parts[1], kind)
    if len(parts) == 2:
        if method == "GET":
            return _get(kind, ident)
        if method == "PUT":
            return _replace(kind, ident, _body(request, kind))
        if method == "DELETE":
            return _delete(kind, ident)
        raise _method(method, "GET, PUT, DELETE")
    if parts[2] != OTHER[kind] or len(parts) > 4:
        raise ApiError(404, "not_found", f"no such resource: /{'/'.join(parts)}")
    if len(parts) == 3:
        if method == "GET":
            return _related(kind, ident)
        if method == "POST" and kind == "courses":
            return _enrol(ident, _student_id(request)), 201
        raise _method(method, "GET, POST" if kind == "courses" else "GET")
    if kind == "students":
        raise ApiError(404, "not_found", f"no such resource: /{'/'.join(parts)}")
    if method == "DELETE":
        return _unenrol(ident, _ident(parts[3], "students"))
    raise _method(method, "DELETE")


def _list(kind: str) -> list[dict[str, Any]]:
    columns = ", ".join(("id", *FIELDS[kind]))
    with database.transaction() as cursor:
        return cursor.execute(f"SELECT {columns} FROM {kind} ORDER BY id").all()


def _create(kind: str, values: dict[str, str]) -> dict[str, Any]:
    names = FIELDS[kind]
    with database.transaction() as cursor:
        row = cursor.execute(
            f"INSERT INTO {kind} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
            " RETURNING id",
            tuple(values[name] for name in names),
        ).one()
    assert row is not None
    return {"id": row["id"], **values}


def _get(kind: str, ident: int) -> dict[str, Any]:
    with database.transaction() as cursor:
        return _must_exist(cursor, kind, ident)


def _replace(kind: str, ident: int, values: dict[str, str]) -> dict[str, Any]:
    names = FIELDS[kind]
    with database.transaction() as cursor:
        updated = cursor.execute(
            f"UPDATE {kind} SET {', '.join(f'{name} = ?' for name in names)} WHERE id = ?",
            (*(values[name] for name in names), ident),
        ).rowcount
    if not updated:
        raise _unknown(kind, ident)
    return {"id": ident, **values}


def _delete(kind: str, ident: int) -> Reply:
    with database.transaction() as cursor:
        # Explicitly, not only by ON DELETE CASCADE: SQLite enforces it per connection only.
        column = "student_id" if kind == "students" else "course_id"
        cursor.execute(f"DELETE FROM enrolments WHERE {column} = ?", (ident,))
        if not cursor.execute(f"DELETE FROM {kind} WHERE id = ?", (ident,)).rowcount:
            raise _unknown(kind, ident)
    return None  # 204


def _related(kind: str, ident: int) -> list[dict[str, Any]]:
    other = OTHER[kind]
    mine, theirs = (
        ("student_id", "course_id") if kind == "students" else ("course_id", "student_id")
    )
    columns = ", ".join(f"o.{name}" for name in ("id", *FIELDS[other]))
    with database.transaction() as cursor:
        _must_exist(cursor, kind, ident)
        return cursor.execute(
            f"SELECT {columns} FROM {other} o JOIN enrolments e ON e.{theirs} = o.id"
            f" WHERE e.{mine} = ? ORDER BY o.id",
            (ident,),
        ).all()


def _enrol(course: int, student: int) -> dict[str, int]:
    with database.transaction() as cursor:
        _must_exist(cursor, "courses", course)
        _must_exist(cursor, "students", student)
        taken = cursor.execute(
            "SELECT 1 AS taken FROM enrolments WHERE student_id = ? AND course_id = ?",
            (student, course),
        ).one()
        if taken:
            raise ApiError(
                409, "conflict", f"student {student} is already enrolled in course {course}"
            )
        cursor.execute(
            "INSERT INTO enrolments (student_id, course_id) VALUES (?, ?)", (student, course)
        )
    return {"student_id": student, "course_id": course}


def _unenrol(course: int, student: int) -> Reply:
    with database.transaction() as cursor:
        removed = cursor.execute(
            "DELETE FROM enrolments WHERE student_id = ? AND course_id = ?", (student, course)
        ).rowcount
    if not removed:
        raise ApiError(404, "not_found", f"student {student} is not enrolled in course {course}")
    return None


def _must_exist(cursor: Cursor, kind: str, ident: int) -> dict[str, Any]:
    columns = ", ".join(("id", *FIELDS[kind]))
    row = cursor.execute(f"SELECT {columns} FROM {kind} WHERE id = ?", (ident,)).one()
    if row is None:
        raise _unknown(kind, ident)
    return row


def _body(request: Request, kind: str) -> dict[str, str]:
    try:
        body = request.json()
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", f"expected a JSON object with {_fields(kind)}")
    values = {}
    for name in FIELDS[kind]:
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, "invalid_body", f"{name!r} must be a non-empty string")
        values[name] = value.strip()
    unknown = sorted(set(body) - set(FIELDS[kind]) - {"id"})
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown fields {unknown}; expected {_fields(kind)}")
    if kind == "students" and not EMAIL.match(values["email"]):
        raise ApiError(400, "invalid_body", f"'email' is not an email address: {values['email']}")
    return values


def _student_id(request: Request) -> int:
    try:
        body = request.json()
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    student = body.get("student_id") if isinstance(body, dict) else None
    if not isinstance(student, int) or isinstance(student, bool):
        raise ApiError(400, "invalid_body", 'expected {"student_id": <integer>}')
    return student


def _ident(text: str, kind: str) -> int:
    if not text.isdigit():
        raise ApiError(404, "not_found", f"no such {kind[:-1]}: {text!r} is not an id")
    return int(text)


def _fields(kind: str) -> str:
    return " and ".join(repr(name) for name in FIELDS[kind])


def _unknown(kind: str, ident: int) -> ApiError:
    return ApiError(404, "not_found", f"no {kind[:-1]} with id {ident}")


def _method(method: str, allowed: str) -> ApiError:
    return ApiError(
        405, "method_not_allowed", f"{method} is not allowed here (allowed: {allowed})", allowed
    )


def _error(status: int, code: str, message: str) -> tuple[dict[str, Any], int]:
    return {"error": {"code": code, "message": message}}, status
