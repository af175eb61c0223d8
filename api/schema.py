"""Endpoint declarations: each endpoint is declared once, and validation comes from it.

A declaration names the method and path, every parameter with its type and limits, the privilege
it needs on which ACL path, and the shape it returns (the way Proxmox registers its methods).
Error texts follow Proxmox's wording, since scripts match on them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from api import propstrings
from api.formats import FORMAT_CHECKS

MAX_LIMIT = 500
INT64 = 2**63
QUANTITY = "integer-or-string"  # a Kubernetes quantity: `4`, `"500m"`, `"8Gi"` (a JSON number or string)
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}

FORMATS = {
    "pve-node": r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?",
    "pve-storage-id": r"[a-z][a-z0-9\-_.]*[a-z0-9]",
    "pve-configid": r"[a-z][a-z0-9_\-]+",  # pve-common's CONFIGID_RE (`prune-backups`, `tag-style`)
    "dns-name": r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*([A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)",
    "pve-userid": r"[^\s:/]+@[A-Za-z][A-Za-z0-9\.\-_]+",
    "pve-realm": r"[A-Za-z][A-Za-z0-9\.\-_]+",
    "pve-poolid": r"[A-Za-z][A-Za-z0-9\-_]+",
}
# Proxmox's `-list` formats: every element of `split_list(value)` must match, else Proxmox's message
# (pve-access-control `verify_rolename`, `verify_groupname`, `verify_username`, `pve_verify_tokenid`).
LIST_FORMATS = {
    "pve-roleid-list": (r"[A-Za-z0-9.\-_]+", "role name '{}' contains invalid characters"),
    "pve-groupid-list": (r"[A-Za-z0-9.\-_]+", "group name '{}' contains invalid characters"),
    "pve-userid-list": (FORMATS["pve-userid"], "value '{}' does not look like a valid user name"),
    "pve-tokenid-list": (FORMATS["pve-userid"] + r"![A-Za-z][A-Za-z0-9.\-_]+",
                         "value '{}' does not look like a valid token ID"),
    "pve-configid-list": (FORMATS["pve-configid"], "invalid configuration ID '{}'"),  # pve_verify_configid
    # pve-storage `verify_content` (the types a `dir` storage holds: engine/storage.py DIR_CONTENT)
    "pve-storage-content-list": (r"images|rootdir|vztmpl|iso|backup|snippets|none|import",
                                 "invalid content type '{}'"),
    "pve-node-list": (FORMATS["pve-node"], "value '{}' does not look like a valid node name"),
}


@dataclass(frozen=True)
class Param:
    name: str  # a plain name, or an indexed family such as "net[n]"
    type: str = "string"  # string | integer | number | boolean | array (repeated keys, a JSON list) | object (JSON)
    optional: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    format: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    max_index: int | None = None  # for "name[n]": highest n
    description: str = ""
    location: str = "body"  # body (or query for GET/DELETE) | path
    items: Param | None = None  # an array's element
    properties: tuple[Param, ...] = ()  # an object's members (no others allowed)
    max_items: int | None = None
    strict: bool = False  # a string only: a JSON number is refused, not taken as its digits

    def matches(self, key: str) -> bool:
        if self.max_index is None:
            return key == self.name
        m = re.fullmatch(re.escape(self.name[:-3]) + r"(\d+)", key)
        return bool(m) and int(m.group(1)) <= self.max_index

    def coerce(self, raw: Any, key: str | None = None) -> Any:
        """Parse one raw value (of parameter `key`, for a family such as `net[n]`); raise ValueError with
        Proxmox's message on failure. A property string (api/propstrings.py) comes back as Proxmox stores it."""
        value: Any = raw
        stored: Any = None
        if self.type == "array":
            return self._coerce_array(raw)
        if self.type == "object":
            return self._coerce_object(raw)
        if self.type == "boolean":
            if isinstance(raw, bool):
                return int(raw)
            word = str(raw).strip().lower()
            if word in TRUE_WORDS:
                return 1
            if word in FALSE_WORDS:
                return 0
            raise ValueError(f"type check ('boolean') failed - got '{raw}'")
        if self.type == "integer":
            if isinstance(raw, bool) or not re.fullmatch(r"[+-]?\d+", str(raw).strip()):
                raise ValueError(f"type check ('integer') failed - got '{raw}'")
            value = int(str(raw).strip())
            if not -INT64 <= value < INT64:
                raise ValueError(f"value must have a {'maximum' if value > 0 else 'minimum'} value of "
                                 f"{INT64 - 1 if value > 0 else -INT64}")
        elif self.type == "number":
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"type check ('number') failed - got '{raw}'") from None
        else:
            if isinstance(raw, (dict, list, bool)) or (self.type == QUANTITY and not isinstance(raw, (int, str))) \
                    or (self.strict and not isinstance(raw, str)):
                # a JSON true is no string ("True" would be stored)
                raise ValueError(f"type check ('{'integer or string' if self.type == QUANTITY else 'string'}') "
                                 f"failed - got '{raw}'")
            value = str(raw)
            if "\x00" in value:
                raise ValueError("value contains a NUL character")
            if propstrings.knows(self.format):
                stored = propstrings.coerce(str(self.format), key or self.name, value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"value must have a minimum value of {_num(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"value must have a maximum value of {_num(self.maximum)}")
        if self.enum is not None and value not in self.enum:
            raise ValueError(f"value '{value}' does not have a value in the enumeration '{', '.join(self.enum)}'")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"value may only be {self.max_length} characters long")
        if self.min_length is not None and len(value) < self.min_length:
            raise ValueError(f"value must be at least {self.min_length} characters long")
        if self.format in LIST_FORMATS:
            element, message = LIST_FORMATS[self.format]
            bad = next((v for v in split_list(value) if not re.fullmatch(element, v)), None)
            if bad is not None:
                raise ValueError("invalid format - " + message.format(bad))
        if self.format in FORMAT_CHECKS and isinstance(value, str):  # checked by code (api/formats.py)
            FORMAT_CHECKS[self.format](value)
        regex = self.pattern or FORMATS.get(self.format or "")
        if regex and isinstance(value, str) and not re.fullmatch(regex, value):
            if self.format and not self.pattern:
                raise ValueError(f"value does not look like a valid {self.format.removeprefix('pve-')}")
            raise ValueError("value does not match the regex pattern")
        return value if stored is None else stored

    def _coerce_array(self, raw: Any) -> list:
        """Proxmox's `type => 'array'`: a JSON list, or repeated keys of a form or query string; a single value is
        a list of one. Elements are checked by `items` (strings when not given)."""
        values = raw if isinstance(raw, list) else [raw]
        if self.max_items is not None and len(values) > self.max_items:
            raise ValueError(f"array may hold at most {self.max_items} items")
        element = self.items or STRING_ITEM
        out = []
        for i, value in enumerate(values):
            try:
                out.append(element.coerce(value))
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}" if len(values) > 1 else str(exc)) from None
        return out

    def _coerce_object(self, raw: Any) -> dict:
        """A JSON object of the declared members (a member given as null counts as not given); a bad member raises
        MemberError naming it (the endpoint's errors key it `OBJECT.MEMBER`)."""
        if not isinstance(raw, dict):
            raise ValueError(f"type check ('object') failed - got '{raw}'")
        out, known = {}, {p.name: p for p in self.properties}
        for key, value in raw.items():
            if key not in known:
                raise MemberError(key, "property is not defined in schema")
            if value is None:
                continue
            try:
                out[key] = known[key].coerce(value)
            except MemberError as exc:
                raise MemberError(f"{key}.{exc.member}", str(exc)) from None
            except ValueError as exc:
                raise MemberError(key, str(exc)) from None
        missing = [p.name for p in self.properties if not p.optional and p.name not in out]
        if missing:
            raise MemberError(missing[0], "property is missing and it is not optional")
        return out

    def json_schema(self) -> dict:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "array":
            out["items"] = (self.items or STRING_ITEM).json_schema()
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        if self.type == "object":
            out["properties"] = {p.name: p.json_schema() for p in self.properties}
            out["additionalProperties"] = False
            required = [p.name for p in self.properties if not p.optional]
            if required:
                out["required"] = required
        for key, val in (("minimum", self.minimum), ("maximum", self.maximum), ("default", self.default),
                         ("pattern", self.pattern), ("format", self.format), ("maxLength", self.max_length),
                         ("minLength", self.min_length)):
            if val is not None:
                out[key] = val
        if self.enum:
            out["enum"] = list(self.enum)
        if self.type == QUANTITY:
            del out["type"]
            out["oneOf"] = [{"type": "integer"}, {"type": "string"}]
        if self.type == "boolean" and "default" in out:
            out["default"] = bool(out["default"])
        return out


STRING_ITEM = Param("item")


class MemberError(ValueError):
    """A bad member `member` (dotted when nested) of an object parameter."""

    def __init__(self, member: str, message: str) -> None:
        super().__init__(message)
        self.member = member


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Permission:
    """A privilege on an ACL path (path may use `{param}`); `check="all"` means any logged-in user,
    `check="root"` root@pam alone (Proxmox's methods without a permission check; tokens are refused).

    As Proxmox's `permissions => {check => ...}`: `privilege` may be a tuple, any one of which suffices
    (`any => 1`); `alternative` suffices instead where its path's parameters are given (`or` with
    `require_param`); `also` must hold as well (`and`). `description` says what the handler checks
    beyond this declaration (per-key privileges, storage), as Proxmox's `description`; the docs show it.
    """

    privilege: str | tuple[str, ...] | None = None
    path: str = "/"
    check: str = "privilege"  # privilege | all | public | root
    alternative: Permission | None = None
    also: Permission | None = None
    description: str = ""

    def applies(self, params: dict[str, Any]) -> bool:
        return all(params.get(name) is not None for name in re.findall(r"\{(\w+)\}", self.path))

    def denial(self, held: Callable[[str], frozenset[str]], params: dict[str, Any]) -> tuple[str, str] | None:
        """None when `held` (ACL path -> privileges) satisfies this, else the (privilege, path) that failed;
        several privileges any of which would do read `A|B`."""
        if self.check != "privilege" or self.privilege is None:
            return None
        wanted = (self.privilege,) if isinstance(self.privilege, str) else self.privilege
        path = self.path.format(**params)
        failed = None if set(wanted) & held(path) else ("|".join(wanted), path)
        if failed and self.alternative is not None and self.alternative.applies(params) \
                and self.alternative.denial(held, params) is None:
            failed = None
        if failed is None and self.also is not None:
            return self.also.denial(held, params)
        return failed

    def document(self) -> dict[str, Any]:
        """The declaration as the OpenAPI document's `x-permission`."""
        if self.check != "privilege":
            out: dict[str, Any] = {"user": "root@pam" if self.check == "root" else "all"}
        elif isinstance(self.privilege, str):
            out = {"privilege": self.privilege, "path": self.path}
        else:
            out = {"any": list(self.privilege or ()), "path": self.path}
        if self.alternative is not None:
            out["or"] = self.alternative.document()
        if self.also is not None:
            out["and"] = self.also.document()
        if self.description:
            out["description"] = self.description
        return out


ROOT_ONLY = Permission(check="root")


Handler = Callable[..., Awaitable[Any]]
# Path parameters that may hold slashes, as the rest of the path (volume ids: Proxmox's `fragmentDelimiter ''`)
GREEDY = ("volume",)


@dataclass
class Endpoint:
    method: str
    path: str
    name: str
    handler: Handler
    params: list[Param] = field(default_factory=list)
    permission: Permission = field(default_factory=lambda: Permission(check="all"))
    returns: dict = field(default_factory=lambda: {"type": "null"})
    description: str = ""
    native: bool = False  # under /v1 (plain JSON) instead of /api2/json (wrapped in "data")
    rate_class: str = ""  # read | write | bulk (derived from the method unless given)
    paged: bool = False  # a list that takes start/limit and answers X-Total-Count and Link
    default_limit: int | None = None  # None: every row unless `limit` is given (Proxmox's compat lists)
    raw_body: bool = False  # the handler reads the body itself (an upload); else it holds parameters
    bare: bool = False  # the answer is the whole body, not wrapped in `data` (a document such as openapi.json)
    absent: str = ""  # a Proxmox feature gpve does not have, which this endpoint answers for (api/compat/absent.py)
    unsupported: bool = False  # answered 501 naming `absent`, whatever the parameters (a write to such a feature)
    text: str = ""  # another content type the answer may have (`format=prometheus`), besides JSON
    upload: str = ""  # a multipart upload: its file's field (the handler reads the body; implies raw_body)
    regex: re.Pattern = field(init=False)
    _finder: tuple[int, Callable[[str], Param | None]] | None = field(default=None, init=False, repr=False,
                                                                     compare=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(1) in GREEDY else '[^/]+'})",
                         self.path)
        self.raw_body = self.raw_body or bool(self.upload)
        self.regex = re.compile(pattern + "/?")
        self.rate_class = self.rate_class or ("read" if self.method == "GET" else "write")
        if self.paged and not any(p.name == "limit" for p in self.params):
            self.params += [Param("start", "integer", minimum=0, default=0, description="Offset of the first row."),
                            Param("limit", "integer", minimum=1, maximum=MAX_LIMIT, default=self.default_limit,
                                  description="Rows to return.")]

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    def validate(self, raw: dict[str, Any], partial: bool = False) -> dict[str, Any]:
        """Coerce and check every parameter; raise ParamErrors with one message per bad parameter. `partial`: body
        parameters may be missing (an upload's, read by its handler, which checks them with `check_params`)."""
        if self._finder is None or self._finder[0] != len(self.params):
            self._finder = (len(self.params), param_finder(self.params))
        return check_params(self.params, raw, partial, self._finder[1])


def param_finder(params: list[Param]) -> Callable[[str], Param | None]:
    """`find(key)`: the first of `params` that `matches(key)`, as a scan would find it, by name look-up (a create
    declares some 300 parameters, most of them families such as `net[n]`)."""
    exact: dict[str, tuple[int, Param]] = {}
    family: dict[str, list[tuple[int, Param]]] = {}
    for i, param in enumerate(params):
        if param.max_index is None:
            exact.setdefault(param.name, (i, param))
        else:
            family.setdefault(param.name[:-3].rstrip("0123456789"), []).append((i, param))

    def find(key: str) -> Param | None:
        best = exact.get(key)
        for i, param in family.get(key.rstrip("0123456789"), ()):
            if best is not None and best[0] < i:
                break
            if param.matches(key):
                best = (i, param)
                break
        return best[1] if best is not None else None

    return find


def check_params(params: list[Param], raw: dict[str, Any], partial: bool = False,
                 find: Callable[[str], Param | None] | None = None) -> dict[str, Any]:
    """`raw` checked against the declared `params` (see Endpoint.validate); `find`: `param_finder(params)`."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        param = find(key) if find is not None else next((p for p in params if p.matches(key)), None)
        if param is None:
            errors[key] = "property is not defined in schema and the schema does not allow additional properties"
            continue
        try:
            values[key] = param.coerce(value, key)
        except MemberError as exc:
            errors[f"{key}.{exc.member}"] = str(exc)
        except ValueError as exc:
            errors[key] = str(exc)
    for param in params:
        if param.max_index is None and param.name not in raw and not param.optional \
                and not (partial and param.location == "body"):
            errors[param.name] = "property is missing and it is not optional"
    if errors:
        raise ParamErrors(errors)
    return values


class ParamErrors(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("Parameter verification failed")
        self.errors = errors


class Registry:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self._indexed = -1  # len(endpoints) when the route index was built
        self._index: dict[tuple[bool, int], dict[tuple[int, ...], dict[tuple[str, ...], list[Endpoint]]]] = {}
        self._greedy: dict[bool, list[tuple[int, Endpoint]]] = {False: [], True: []}

    def children(self, path: str) -> list[str]:
        """The names one level below `path` that a GET serves (a Proxmox directory index: `subdir`s), taken from
        the declarations, so an index never names what does not exist."""
        prefix = path.rstrip("/") + "/"
        return sorted({ep.path[len(prefix):] for ep in self.endpoints
                       if not ep.native and ep.method == "GET" and ep.path.startswith(prefix)
                       and "/" not in ep.path[len(prefix):] and not ep.path[len(prefix):].startswith("{")})

    def endpoint(self, method: str, path: str, *, params: list[Param] | None = None,
                 permission: Permission | None = None, returns: dict | None = None, description: str = "",
                 native: bool = False, rate_class: str = "", paged: bool = False,
                 default_limit: int | None = None, raw_body: bool = False,
                 bare: bool = False, absent: str = "", unsupported: bool = False,
                 text: str = "", upload: str = "") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(method, path, handler.__name__, handler, list(params or []),
                                           permission or Permission(check="all"), returns or {"type": "null"},
                                           description or (handler.__doc__ or ""), native, rate_class, paged,
                                           default_limit, raw_body, bare, absent, unsupported, text, upload))
            return handler
        return register

    def resolve(self, method: str, path: str, native: bool = False) -> tuple[Endpoint | None, dict[str, str], bool]:
        """Find the endpoint (the first declared whose path matches); the flag says whether the path exists under
        another method. Only the endpoints whose path has as many segments, with the same literal ones, are tried
        (`_route_index`), and those with a greedy parameter; in declaration order, as a scan of all would."""
        if self._indexed != len(self.endpoints):
            self._index, self._greedy = _route_index(self.endpoints)
            self._indexed = len(self.endpoints)
        segments = path.strip("/").split("/")
        ranked = list(self._greedy[native])
        for positions, table in self._index.get((native, len(segments)), {}).items():
            ranked += table.get(tuple([segments[i] for i in positions]), ())
        if len(ranked) > 1:
            ranked.sort()
        candidates = [ep for _, ep in ranked]
        path_known = False
        for ep in candidates:
            m = ep.regex.fullmatch(path)
            if m:
                if ep.method == method:
                    return ep, m.groupdict(), True
                path_known = True
        return None, {}, path_known


def _route_index(endpoints: list[Endpoint]) -> tuple[dict, dict[bool, list[tuple[int, Endpoint]]]]:
    """Endpoints (with their declaration rank) by (native, segment count) → positions of their literal segments →
    those segments' text; and, by `native`, the endpoints with a greedy parameter (`{volume}`: any number of
    segments), which are always tried."""
    index: dict = {}
    greedy: dict[bool, list[tuple[int, Endpoint]]] = {False: [], True: []}
    for rank, ep in enumerate(endpoints):
        segments = ep.path.strip("/").split("/")
        if any(f"{{{name}}}" in ep.path for name in GREEDY):
            greedy[ep.native].append((rank, ep))
            continue
        positions = tuple(i for i, seg in enumerate(segments) if "{" not in seg)
        index.setdefault((ep.native, len(segments)), {}).setdefault(positions, {}).setdefault(
            tuple(segments[i] for i in positions), []).append((rank, ep))
    return index, greedy


# Shared standard options, like Proxmox's `get_standard_option`.
NODE = Param("node", format="pve-node", optional=False, location="path", description="The cluster node name.")
VMID = Param("vmid", "integer", optional=False, minimum=100, maximum=999_999_999, format="pve-vmid",
             description="The (unique) ID of the VM.")
VMID_PATH = Param("vmid", "integer", optional=False, minimum=100, maximum=999_999_999, format="pve-vmid",
                  location="path", description="The (unique) ID of the VM.")
UPID_PATH = Param("upid", optional=False, location="path", description="The task's unique ID.")
UPID_RETURN = {"type": "string", "description": "The task's UPID."}


def split_list(value) -> list[str]:
    """Proxmox list parameters: `a,b;c d`, or repeated keys (a list)."""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return [v for v in str(value or "").replace(";", ",").replace(" ", ",").split(",") if v]
