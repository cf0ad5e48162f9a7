"""Pydantic models of every resource: one source of truth for the API, the store and the CLI.

Each resource has a *spec* (what a user declares) and, where the platform adds state, a read
model that extends it (``Package`` adds build status, ``Function`` adds live instance counts).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from fissile import _host
from fissile._commandline import split_command
from fissile._names import NAME_MAX, NAME_PATTERN
from fissile._units import parse_duration, parse_memory
from fissile.revision_targets import TARGET_PATTERN

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="lowercase letters, digits and '-', starting and ending with a letter or digit",
    ),
]

# A route's split target: a function, or one of its revisions (``a@3``; revision_targets.py).
Target = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX + 10,
        pattern=TARGET_PATTERN,
        description="a function's name, or NAME@REVISION for one of its revisions",
    ),
]

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0, description="seconds, or a string such as '500ms', '30s', '2m'"),
]
Memory = Annotated[
    int,
    BeforeValidator(parse_memory),
    Field(ge=0, description="bytes, or a string such as '128Mi' or '1Gi'"),
]

#: Environment images this node can run; Fission's image names map onto them. ``command``
#: runs a program of the function's package that serves HTTP itself; ``binary`` runs an
#: executable of the package per request (``fissile.runtime.command``, ``.binary``).
IMAGES = {"python", "command", "binary"}
IMAGE_ALIASES = {
    "fission/python-env": "python",
    "ghcr.io/fission/python-env": "python",
    "fission/binary-env": "binary",
    "ghcr.io/fission/binary-env": "binary",
}
#: Images whose instances run no Python code of the function (no contract, no preload).
FOREIGN_IMAGES = frozenset({"command", "binary"})
COMMAND_MAX = 4096

Network = Literal["host", "none"]

#: How a function is called (``fissile.runtime.contracts``); ``auto`` detects it.
Contract = Literal[
    "auto",
    "native",
    "fission",
    "fission-fastapi",
    "lambda",
    "lambda-v1",
    "gcf",
    "openfaas-http",
    "openfaas-flask",
    "asgi",
    "wsgi",
]
#: Fission images whose functions follow another contract than the python image's.
IMAGE_CONTRACTS = {"fission/python-fastapi-env": "fission-fastapi"}

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _image_contract(bare: str) -> str | None:
    """The contract a Fission image name implies (its registry host and a version suffix such
    as ``-3.11`` aside)."""
    for prefix, contract in IMAGE_CONTRACTS.items():
        if bare == prefix or bare.endswith("/" + prefix) or f"{prefix}-" in bare:
            return contract
    return None


def _normalise_image(value: Any) -> Any:
    if isinstance(value, str):
        bare = value.split(":", 1)[0]
        if _image_contract(bare) is not None:
            return "python"
        for prefix, image in IMAGE_ALIASES.items():
            if bare == prefix or bare.startswith(prefix + "-"):
                return image
    return value


Labels = dict[
    Annotated[str, Field(min_length=1, max_length=253)], Annotated[str, Field(max_length=253)]
]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Meta(BaseModel):
    """Fields the platform keeps for every stored resource."""

    created_at: datetime | None = None
    updated_at: datetime | None = None
    generation: int = 0


# --- Environment -------------------------------------------------------------------------


class EnvironmentSpec(Spec):
    name: Name
    image: Annotated[str, BeforeValidator(_normalise_image)] = "python"
    poolsize: int = Field(
        3, ge=0, description="warm, unspecialized instances kept ready (bounded by the host)"
    )
    preload: list[str] = Field(
        default_factory=list, description="modules the environment's zygote imports once"
    )
    network: Network = Field(
        "host", description="host: share the host's network; none: a private loopback only"
    )
    contract: Contract = Field(
        "auto", description="how its functions are called unless a function says otherwise"
    )
    command: str | None = Field(
        None,
        max_length=COMMAND_MAX,
        description="image command: the program each instance runs, a shell-style command line"
        " run in the function's package (e.g. 'node server.js')",
    )
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )

    @model_validator(mode="after")
    def _image_fields(self) -> EnvironmentSpec:
        if self.image == "command":
            if not self.command:
                raise ValueError("image command needs a command, e.g. 'node server.js'")
            split_command(self.command)
        elif self.command is not None:
            raise ValueError(f"command applies to image command only, not {self.image}")
        if self.image in FOREIGN_IMAGES and self.preload:
            raise ValueError(f"preload applies to image python only, not {self.image}")
        return self

    @field_validator("poolsize")
    @classmethod
    def _poolsize(cls, value: int) -> int:
        bound = _host.max_poolsize()
        if value > bound:
            raise ValueError(
                f"at most {bound} on this host (one warm instance per"
                f" {_host.INSTANCE_MEMORY >> 20} MiB of memory"
                f" and {_host.INSTANCE_PIDS} process ids)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _image_contract(cls, data: Any) -> Any:
        """A Fission image name that implies a contract (python-fastapi-env) sets it."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("image"), str)
            and not data.get("contract")
        ):
            contract = _image_contract(data["image"].split(":", 1)[0])
            if contract is not None:
                return {**data, "contract": contract}
        return data

    @field_validator("image")
    @classmethod
    def _known_image(cls, value: str) -> str:
        if value not in IMAGES:
            raise ValueError(
                f"unsupported image {value!r}; this node runs: {', '.join(sorted(IMAGES))}"
            )
        return value

    @field_validator("preload")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        for module in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
                raise ValueError(f"{module!r} is not a module name")
        return value


class Environment(EnvironmentSpec, Meta):
    pass


# --- Package -----------------------------------------------------------------------------


class BuildState(StrEnum):
    pending = "pending"
    building = "building"
    succeeded = "succeeded"
    failed = "failed"


class PackageSpec(Spec):
    name: Name
    env: Name
    source: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of an uploaded source archive"
    )
    buildcmd: str | None = Field(None, max_length=4096)
    owner: Name | None = Field(None, description="the function that created this package")
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )


class BuildStatus(BaseModel):
    state: BuildState = BuildState.pending
    deploy: str | None = Field(
        None,
        description="content address of the deploy directory served: the last good build",
    )
    log: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rebuild: int = Field(0, description="explicit rebuilds so far; part of the build's address")
    node: str | None = Field(
        None, description="in a cluster: the node that runs (or ran) this build"
    )


class Package(PackageSpec, Meta):
    status: BuildStatus = Field(default_factory=BuildStatus)


# --- Function ----------------------------------------------------------------------------

MIN_MEMORY = 16 * 1024**2  # the least memory a function may have
# module.func, func, module:attr (ASGI/WSGI apps), a module file named with dashes, or empty
# (Fission's default: main).
ENTRYPOINT_PATTERN = (
    r"^([A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*(:[A-Za-z_][A-Za-z0-9_]*"
    r"(\.[A-Za-z_][A-Za-z0-9_]*)*)?)?$"
)
EnvVars = dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str]


def _value_ref(value: Any) -> Any:
    """A reference may be written as a bare name (namespace ``default``) or ``namespace/name``."""
    if isinstance(value, str):
        namespace, _, name = value.rpartition("/")
        return {"name": name, "namespace": namespace or "default"}
    return value


class ValueRefModel(Spec):
    """A function's use of a secret or config map, mounted at
    ``/secrets/<namespace>/<name>/`` (``/configs/...``): Fission's layout. fissile has no
    namespaces of its own: the namespace only places the files, ``default`` unless a
    Fission spec says otherwise."""

    name: Name
    namespace: Name = "default"


ValueRef = Annotated[ValueRefModel, BeforeValidator(_value_ref)]


class FunctionSpec(Spec):
    name: Name
    env: Name
    package: Name
    entrypoint: str = Field("main", pattern=ENTRYPOINT_PATTERN)
    contract: Contract | None = Field(
        None, description="how the function is called; unset: its environment's (auto by default)"
    )
    timeout: Duration = Field(60.0, gt=0, le=86400)
    memory: Memory = Field(256 * 1024**2, ge=MIN_MEMORY)
    cpu: float | None = Field(None, gt=0, le=64, description="CPU cores (enforced by the sandbox)")
    min_scale: int = Field(0, ge=0, le=1000)
    max_scale: int = Field(10, ge=1, le=1000)
    concurrency: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="in-flight requests per instance; unset: 1, or 100 for an async def function",
    )
    idle_timeout: Duration = Field(120.0, ge=0)
    queue_timeout: Duration | None = Field(
        None,
        gt=0,
        le=86400,
        description="longest a request waits for an instance (then 503); unset: the timeout",
    )
    queue_limit: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="requests that may wait (then 429); unset: 10 x max_scale x concurrency,"
        " at most 1000",
    )
    async_retries: int = Field(
        0, ge=0, le=20, description="extra attempts of a failed asynchronous invocation"
    )
    env_vars: EnvVars = Field(
        default_factory=dict,
        description="a value may hold ${secret:NAME/KEY} or ${configmap:NAME/KEY}, replaced by"
        " that key's value when an instance starts",
    )
    secrets: list[ValueRef] = Field(
        default_factory=list, description="secrets mounted at /secrets/<namespace>/<name>/<key>"
    )
    configmaps: list[ValueRef] = Field(
        default_factory=list, description="config maps mounted at /configs/<namespace>/<name>/<key>"
    )
    network: Network | None = Field(None, description="host or none; unset: the environment's")
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )

    @model_validator(mode="after")
    def _scale_bounds(self) -> FunctionSpec:
        if self.min_scale > self.max_scale:
            raise ValueError(
                f"min_scale ({self.min_scale}) cannot exceed max_scale ({self.max_scale})"
            )
        return self

    def code_fields(self) -> tuple[Any, ...]:
        """Fields whose change must roll the function's instances."""
        return (
            self.env,
            self.package,
            self.entrypoint,
            self.contract,
            self.memory,
            self.cpu,
            self.network,
            tuple(sorted(self.env_vars.items())),
            tuple((r.namespace, r.name) for r in self.secrets),
            tuple((r.namespace, r.name) for r in self.configmaps),
        )


class FunctionStatus(BaseModel):
    contract: str | None = Field(
        None, description="the contract in effect, learnt when an instance loads the function"
    )
    instances: int = 0
    pids: list[int] = Field(
        default_factory=list, description="host process ids of the ready instances"
    )
    desired: int = Field(0, description="instances the autoscaler wants")
    panic: bool = Field(False, description="the autoscaler is in panic mode (a burst)")
    busy: int = 0
    starting: int = 0
    queued: int = Field(0, description="requests waiting for an instance")
    inflight: int = Field(0, description="requests being served")
    concurrency: int = Field(1, description="in-flight limit per instance in effect")
    restarts: int = 0
    last_exit_reason: str | None = None
    last_crash_at: datetime | None = None
    failures_in_a_row: int = 0
    backoff: float = Field(0.0, description="seconds until the next start while crash-looping")
    queue_limit: int = Field(0, description="requests that may wait, in effect")
    rejected: int = Field(0, description="requests answered 429: the queue was full")
    queue_timeouts: int = Field(0, description="requests answered 503: waited too long")
    timeouts: int = Field(
        0, description="requests that overran the timeout (504, their instance killed)"
    )


class PreflightStatus(BaseModel):
    """A function's pre-flight of its package's new build (controlplane/revisions.py)."""

    state: Literal["running", "refused"]
    deploy: str = Field(description="the build being loaded, or refused")
    error: str | None = Field(None, description="why it was refused: the load's error")
    at: datetime


class Function(FunctionSpec, Meta):
    status: FunctionStatus = Field(default_factory=FunctionStatus)
    revision: int | None = Field(None, description="the revision served (`fn revisions`)")
    deploy: str | None = Field(None, description="the build the served revision runs")
    preflight: PreflightStatus | None = Field(
        None,
        description="the pre-flight of its package's new build: running, or refused (the"
        " function keeps its revision)",
    )


class FunctionRevision(BaseModel):
    """One immutable revision of a function: its spec and the build it runs."""

    function: str
    number: int
    created_at: datetime
    package: str | None = None
    source: str | None = Field(None, description="sha256 of the package's source archive")
    deploy: str | None = Field(None, description="the build it runs; None before its first")
    changes: list[str] = Field(description="what differs from the revision before")
    rollback_to: int | None = None
    pruned: bool = Field(False, description="its build was freed: no rollback to it")
    spec: dict[str, Any] = Field(default_factory=dict)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(None, ge=1, description="the revision; unset: the one before")


# --- HTTPTrigger -------------------------------------------------------------------------

_RESERVED_PREFIXES = {
    "/function": "direct function calls",
    "/async-function": "asynchronous function calls",
    "/invocations": "asynchronous invocation results",
}
# A parameter's pattern may match '/' (``{path:[a-z/]+}``), as gorilla/mux lets Fission's do.
_HOST_NAME = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
_URL_SEGMENT = r"(\{[A-Za-z_][A-Za-z0-9_]*(:[^{}]+)?\}|[A-Za-z0-9._~!$&'()*+,;=:@%-]+)"


def template_segments(path: str) -> list[str]:
    """The segments of a path template (without its leading '/'), split at the slashes outside
    its ``{params}``."""
    segments: list[str] = []
    depth = start = 0
    for index, char in enumerate(path):
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        elif char == "/" and depth == 0:
            segments.append(path[start:index])
            start = index + 1
    segments.append(path[start:])
    return segments


class HTTPTriggerSpec(Spec):
    name: Name
    function: Name
    function_weights: dict[Target, Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=dict,
        description="split the route's requests between functions by weight ({a: 90, b: 10};"
        " Fission's functionweights), or revisions of them ({a: 90, 'a@3': 10});"
        " `function` must be one of them. Empty: all to `function`",
    )
    url: str | None = Field(None, description="path template: /students/{id} or /items/{id:[0-9]+}")
    prefix: str | None = Field(None, description="serve this path and everything under it")
    methods: list[str] = Field(default_factory=lambda: ["GET"])
    webhook_secret: str | None = Field(
        None,
        min_length=8,
        max_length=512,
        description="verify a GitHub-style X-Hub-Signature-256 HMAC of the body with this secret;"
        " requests with a bad or missing signature get 401. Never shown by `get`.",
    )
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )
    # Edge security (docs/security.md): all optional; a route without any costs the router
    # nothing extra per request.
    host: str | None = Field(
        None,
        description="serve only requests for this host name (Fission's HTTPTrigger host);"
        " none: any host",
    )
    cors: CORSPolicy | None = Field(None, description="answer browsers' CORS preflights")
    auth: AuthMode = Field("none", description="who may call: none, apikey, basic or jwt")
    basic_users: dict[Name, str] = Field(
        default_factory=dict,
        description="auth basic: user -> scrypt hash of the password (a plain password given"
        " here is hashed before it is stored). Never shown by `get`.",
    )
    jwt: JWTSettings | None = Field(None, description="auth jwt: how tokens are verified")
    rate: str | None = Field(
        None, description="most requests per second ('100/s', '600/m', '3600/h'); 429 past it"
    )
    burst: int | None = Field(
        None, ge=1, le=1_000_000, description="requests allowed at once [default: the rate]"
    )

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        host = value.strip().lower().rstrip(".")
        if not re.fullmatch(
            r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", host
        ):
            raise ValueError("must be a host name such as api.example.com (no port, no scheme)")
        return host

    @field_validator("basic_users", mode="before")
    @classmethod
    def _hash_passwords(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        from fissile.router.passwords import hash_password, is_hash

        hashed: dict[str, Any] = {}
        for user, password in value.items():
            if not isinstance(password, str) or not password:
                raise ValueError(f"user {user!r} needs a password")
            # The mask a read shows is resolved by the control API's update (kept as it was).
            keep = is_hash(password) or password == SECRET_MASK
            hashed[user] = password if keep else hash_password(password)
        return hashed

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_rate(value)
        return value.strip()

    @model_validator(mode="after")
    def _auth_settings(self) -> HTTPTriggerSpec:
        if self.auth == "basic" and not self.basic_users:
            raise ValueError("auth basic needs at least one user (basic_users)")
        if self.auth == "jwt" and self.jwt is None:
            raise ValueError("auth jwt needs jwt settings (a secret or a JWKS file)")
        if self.burst is not None and self.rate is None:
            raise ValueError("burst needs a rate")
        return self

    @field_validator("url", "prefix")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        if len(value) > 1024:
            raise ValueError("must be at most 1024 characters")
        trimmed = value.rstrip("/") or "/"
        if trimmed != "/":
            for segment in template_segments(trimmed[1:]):
                if not re.fullmatch(_URL_SEGMENT, segment):
                    raise ValueError(f"invalid path segment {segment!r}")
                if segment.startswith("{") and ":" in segment:
                    try:
                        re.compile(segment[1:-1].split(":", 1)[1])
                    except re.error as exc:
                        raise ValueError(f"invalid pattern in {segment!r}: {exc}") from exc
        for reserved, why in _RESERVED_PREFIXES.items():
            if trimmed == reserved or trimmed.startswith(reserved + "/"):
                raise ValueError(f"{reserved}/... is reserved for {why}")
        if trimmed.startswith("/_fissile"):
            raise ValueError("/_fissile is reserved by the router")
        return trimmed

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        methods: list[str] = []
        for method in value:
            upper = method.upper()
            if upper in ("ANY", "*"):
                return ["*"]
            if upper not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {method!r}")
            if upper not in methods:
                methods.append(upper)
        if not methods:
            raise ValueError("at least one method (or ANY) is required")
        return methods

    @model_validator(mode="after")
    def _weights(self) -> HTTPTriggerSpec:
        if self.function_weights:
            if self.function not in self.function_weights:
                raise ValueError(
                    f"function {self.function!r} must be one of function_weights' functions"
                )
            if not any(self.function_weights.values()):
                raise ValueError("function_weights need at least one weight above 0")
        return self

    @model_validator(mode="after")
    def _url_or_prefix(self) -> HTTPTriggerSpec:
        if (self.url is None) == (self.prefix is None):
            raise ValueError("give exactly one of url or prefix")
        if self.prefix is not None and "{" in self.prefix:
            raise ValueError("a prefix cannot hold {params}")
        return self


class HTTPTrigger(HTTPTriggerSpec, Meta):
    pass


# --- Edge security: CORS, auth, rate limits, API keys (docs/security.md) ------------------

AuthMode = Literal["none", "apikey", "basic", "jwt"]
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|\*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """Requests per second of ``'100/s'``, ``'600/m'`` or ``'3600/h'``."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|m|h)\s*", text)
    if match is None:
        raise ValueError(f"invalid rate {text!r}: use a count per s, m or h, such as '100/s'")
    count = float(match.group(1))
    if count <= 0:
        raise ValueError(f"invalid rate {text!r}: must be more than 0")
    return count / _RATE_UNITS[match.group(2)]


class CORSPolicy(Spec):
    origins: list[str] = Field(
        min_length=1, description="origins allowed to call (https://app.example.com), or '*'"
    )
    methods: list[str] = Field(
        default_factory=list, description="methods a preflight allows [default: the route's]"
    )
    headers: list[str] = Field(
        default_factory=list, description="request headers a preflight allows"
    )
    credentials: bool = Field(False, description="allow cookies and Authorization")
    max_age: int | None = Field(
        None, ge=0, le=86400, description="seconds a browser may cache the preflight"
    )

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins: list[str] = []
        for origin in value:
            origin = origin.strip().rstrip("/")
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"invalid origin {origin!r}: use scheme://host[:port] (no path) or '*'"
                )
            origins.append(origin.lower())
        return origins

    @field_validator("methods")
    @classmethod
    def _cors_methods(cls, value: list[str]) -> list[str]:
        methods = [m.upper() for m in value]
        for method in methods:
            if method not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {method!r}")
        return methods

    @field_validator("headers")
    @classmethod
    def _cors_headers(cls, value: list[str]) -> list[str]:
        for header in value:
            if not _TOKEN.fullmatch(header):
                raise ValueError(f"invalid header name {header!r}")
        return [h.lower() for h in value]

    @model_validator(mode="after")
    def _wildcard(self) -> CORSPolicy:
        if self.credentials and "*" in self.origins:
            raise ValueError("credentials need explicit origins: browsers refuse '*' with them")
        return self


class JWTSettings(Spec):
    secret: str | None = Field(
        None, max_length=4096, description="HMAC shared secret (32+ characters). Never shown."
    )
    jwks_file: str | None = Field(
        None, description="a JWKS file on the platform's host (public keys, picked by 'kid')"
    )
    audience: str | None = Field(None, description="required 'aud' claim")
    issuer: str | None = Field(None, description="required 'iss' claim")
    algorithms: list[str] = Field(
        default_factory=list,
        description="accepted algorithms [default: HS256 with a secret; RS256 and ES256 with"
        " a JWKS file]",
    )

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        # The mask a read shows is resolved by the control API's update (kept as it was).
        # RFC 7518: an HMAC key at least as long as the hash (HS256: 32 bytes).
        if value is not None and value != SECRET_MASK and len(value) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> JWTSettings:
        if (self.secret is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of secret or jwks_file")
        if self.jwks_file is not None and not self.jwks_file.startswith("/"):
            raise ValueError("jwks_file must be an absolute path")
        allowed = {"HS256", "HS384", "HS512"} if self.secret else _PUBLIC_KEY_ALGORITHMS
        for algorithm in self.algorithms:
            if algorithm not in allowed:
                raise ValueError(
                    f"algorithm {algorithm!r} does not fit a"
                    f" {'secret' if self.secret else 'JWKS file'}: use {', '.join(sorted(allowed))}"
                )
        return self


_PUBLIC_KEY_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}


class APIKeySpec(Spec):
    """An API key's declaration: its value is made by the platform and shown once, never
    declared (a spec in git holds no secret)."""

    name: Name
    functions: list[Name] = Field(
        default_factory=list, description="functions it may call [default: any]"
    )
    rate: str | None = Field(None, description="most requests per second with this key")
    burst: int | None = Field(None, ge=1, le=1_000_000)
    labels: Labels = Field(default_factory=dict)

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_rate(value)
        return value.strip()


class APIKey(APIKeySpec, Meta):
    #: The first characters of the value, to tell keys apart; never enough to use one.
    hint: str = ""


# The trigger's fields name the classes above.
HTTPTriggerSpec.model_rebuild()
HTTPTrigger.model_rebuild()


#: What a read of an HTTP trigger shows instead of its webhook secret.
SECRET_MASK = "********"


# --- TimeTrigger -------------------------------------------------------------------------


class TimeTriggerSpec(Spec):
    name: Name
    function: Name
    cron: str = Field(
        description="5 cron fields, or 6 with a leading seconds field; @hourly, @daily...;"
        " or '@every 30s'"
    )
    timezone: str = Field("UTC", description="IANA time zone the cron fields are read in")
    method: Literal["GET", "POST", "PUT"] = "POST"
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )

    @model_validator(mode="after")
    def _schedule(self) -> TimeTriggerSpec:
        from fissile.triggers.schedule import Schedule, ScheduleError

        try:
            Schedule(self.cron, self.timezone)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return self


class TimeTriggerStatus(BaseModel):
    last_fired: datetime | None = None
    next_fire: datetime | None = None


class TimeTrigger(TimeTriggerSpec, Meta):
    status: TimeTriggerStatus = Field(default_factory=TimeTriggerStatus)


# --- MessageQueueTrigger -----------------------------------------------------------------

MQTYPES = ("embedded", "redis", "nats", "rabbitmq", "kafka")
MQType = Literal["embedded", "redis", "nats", "rabbitmq", "kafka"]
Topic = Annotated[str, Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")]


class MessageQueueTriggerSpec(Spec):
    name: Name
    function: Name
    mqtype: MQType = "embedded"
    topic: Topic
    resptopic: Topic | None = Field(None, description="where 2xx response bodies are published")
    errortopic: Topic | None = Field(
        None, description="where a message that failed every attempt is published, with the error"
    )
    maxretries: int = Field(3, ge=0, le=100, description="retries after the first attempt")
    concurrency: int = Field(1, ge=1, le=1000, description="messages in flight at once")
    broker_url: str | None = Field(
        None, max_length=2048, description="the broker's URL; unset: its local default"
    )
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )

    @model_validator(mode="after")
    def _topics(self) -> MessageQueueTriggerSpec:
        if self.mqtype == "embedded" and self.broker_url:
            raise ValueError("the embedded broker takes no broker_url")
        if self.topic in (self.resptopic, self.errortopic):
            raise ValueError("resptopic and errortopic must differ from topic (a loop)")
        return self


class ConsumerStatus(BaseModel):
    state: Literal["starting", "running", "paused", "error", "stopped"] = "stopped"
    error: str | None = None
    processed: int = Field(0, description="messages whose function answered 2xx")
    failed: int = Field(
        0, description="messages sent to the error topic (or dropped) after retries"
    )
    inflight: int = 0


class MessageQueueTrigger(MessageQueueTriggerSpec, Meta):
    status: ConsumerStatus = Field(default_factory=ConsumerStatus)


# --- WatchTrigger ------------------------------------------------------------------------

EVENT_PATTERN = r"^(\*|[a-z]+\.(\*|[a-z_]+))$"


class WatchTriggerSpec(Spec):
    name: Name
    function: Name
    event: str = Field(
        pattern=EVENT_PATTERN,
        description="function.created, function.updated, function.deleted, instance.crashed,"
        " invocation.completed, node.started; or function.*, *",
    )
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )

    @field_validator("event")
    @classmethod
    def _known(cls, value: str) -> str:
        from fissile.events import EVENT_TYPES

        if value == "*" or value in EVENT_TYPES:
            return value
        if value.endswith(".*") and any(t.startswith(value[:-1]) for t in EVENT_TYPES):
            return value
        raise ValueError(f"unknown event {value!r}; known: {', '.join(EVENT_TYPES)}")


class WatchTrigger(WatchTriggerSpec, Meta):
    pass


# --- Secret and ConfigMap ----------------------------------------------------------------

#: Kubernetes' rule for the keys of a secret or config map: each becomes a file name.
VALUE_KEY_PATTERN = r"^[-._A-Za-z0-9]+$"
ValueKey = Annotated[str, Field(min_length=1, max_length=253, pattern=VALUE_KEY_PATTERN)]
#: The most one secret or config map may hold, all values together (Kubernetes' limit too).
VALUES_MAX_BYTES = 1024 * 1024


class ValuesSpec(Spec):
    name: Name
    data: dict[ValueKey, str] = Field(default_factory=dict, description="key -> value (text)")
    labels: Labels = Field(
        default_factory=dict, description="free-form tags; `spec apply` records its deployment here"
    )

    @field_validator("data")
    @classmethod
    def _bounded(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in (".", ".."):
                raise ValueError(f"{key!r} cannot be a key (it names a file)")
        size = sum(len(v.encode()) for v in value.values())
        if size > VALUES_MAX_BYTES:
            raise ValueError(f"{size} bytes of values; at most {VALUES_MAX_BYTES}")
        return value


class SecretSpec(ValuesSpec):
    """Write-only: the API never answers with a secret's values, only its keys and sizes."""


class ConfigMapSpec(ValuesSpec):
    pass


class KeyInfo(BaseModel):
    key: str
    size: int = Field(description="bytes")


class Secret(Meta):
    name: str
    keys: list[KeyInfo] = Field(default_factory=list)
    digest: str = Field(
        "", description="HMAC of the values under the platform's key: tells a change, not a value"
    )
    labels: Labels = Field(default_factory=dict)


class ConfigMap(ConfigMapSpec, Meta):
    keys: list[KeyInfo] = Field(default_factory=list)
    digest: str = ""


# --- Canary (docs/cli.md: fissile canary) -----------------------------------------------

CanaryState = Literal["pending", "succeeded", "failed", "aborted"]


class CanarySpec(Spec):
    """Move a route's traffic from one function to another step by step (Fission's
    CanaryConfig): every ``increment_interval`` the new function's weight grows by
    ``increment_step`` while its 5xx share in the last interval stays at or under
    ``failure_threshold`` percent; past it, the new function's weight goes back to 0."""

    name: Name
    httptrigger: Name = Field(description="the route whose weights move")
    newfunction: Name = Field(description="the function taking over")
    oldfunction: Name = Field(description="the function the route serves now")
    increment_step: int = Field(20, ge=1, le=100, description="percent added each interval")
    increment_interval: Duration = Field(
        120.0, gt=0, le=86400, description="time between steps ('1m', '30s')"
    )
    failure_threshold: int = Field(
        10, ge=0, le=100, description="percent of the new function's requests that may fail"
    )
    failure_type: Literal["status-code"] = Field(
        "status-code", description="what counts as a failure: a 5xx answer"
    )
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _two_functions(self) -> CanarySpec:
        if self.newfunction == self.oldfunction:
            raise ValueError("newfunction and oldfunction must differ")
        return self


class CanaryStatus(BaseModel):
    state: CanaryState = "pending"
    weight: int = Field(0, description="the new function's current weight, percent")
    error_rate: float | None = Field(
        None, description="percent of the new function's requests answered 5xx in the last step"
    )
    requests: int = Field(0, description="the new function's requests in the last step")
    message: str = ""
    next_step_at: datetime | None = None


class Canary(CanarySpec, Meta):
    status: CanaryStatus = Field(default_factory=CanaryStatus)


# --- Registry of kinds ---------------------------------------------------------------------

Kind = Literal[
    "environments",
    "packages",
    "functions",
    "httptriggers",
    "timetriggers",
    "mqtriggers",
    "watchtriggers",
    "apikeys",
    "secrets",
    "configmaps",
    "canaries",
]
#: Kinds that point at a function and make it run.
TRIGGER_KINDS = ("httptriggers", "timetriggers", "mqtriggers", "watchtriggers")

SPEC_MODELS: dict[str, type[Spec]] = {
    "environments": EnvironmentSpec,
    "packages": PackageSpec,
    "functions": FunctionSpec,
    "httptriggers": HTTPTriggerSpec,
    "timetriggers": TimeTriggerSpec,
    "mqtriggers": MessageQueueTriggerSpec,
    "watchtriggers": WatchTriggerSpec,
    "apikeys": APIKeySpec,
    "secrets": SecretSpec,
    "configmaps": ConfigMapSpec,
    "canaries": CanarySpec,
}
READ_MODELS: dict[str, type[BaseModel]] = {
    "environments": Environment,
    "packages": Package,
    "functions": Function,
    "httptriggers": HTTPTrigger,
    "timetriggers": TimeTrigger,
    "mqtriggers": MessageQueueTrigger,
    "watchtriggers": WatchTrigger,
    "apikeys": APIKey,
    "secrets": Secret,
    "configmaps": ConfigMap,
    "canaries": Canary,
}
SINGULAR = {
    "environments": "environment",
    "packages": "package",
    "functions": "function",
    "httptriggers": "HTTP trigger",
    "timetriggers": "timer",
    "mqtriggers": "message queue trigger",
    "watchtriggers": "watch trigger",
    "apikeys": "API key",
    "secrets": "secret",
    "configmaps": "config map",
    "canaries": "canary",
}


class ArchiveInfo(BaseModel):
    sha256: str
    size: int
    files: int


class PlatformInfo(BaseModel):
    version: str
    router_url: str
    data_dir: str
    sandbox_mode: str = "off"
    sandbox_active: dict[str, bool] = Field(default_factory=dict)
