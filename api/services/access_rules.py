"""Who may manage API tokens, passwords and user records: Proxmox's rules, for every transport.

An API token (`user@realm!name`) is never its user. Proxmox's `['userid-param', 'self']` check
compares the caller's id with `userid` as strings, so for a token "self" never holds, and a token
acts on tokens (its own, its siblings', another user's) only with `User.Modify` on
`/access/users/<userid>` in its own effective privileges (a privsep token: the intersection of its
ACLs with its user's). Passwords are never changed with a token (`allowtoken => 0` on
`PUT /access/password`). Sources: pve-access-control `src/PVE/API2/User.pm` (token endpoints'
`permissions`), `src/PVE/API2/AccessControl.pm` (`change_password`, `permissions`),
`src/PVE/RPCEnvironment.pm` (`exec_api2_perm_check`); pve-http-server `rest_handler` (`allowtoken`).

Each check takes the state, the caller's id and the target, and raises a 403 `Rejection` or returns.
"""

from __future__ import annotations

from api.errors import forbidden
from engine.errors import Rejection
from engine.roles import privileges_on
from engine.state import State

TOKEN_REFUSED = "Permission check failed (URI '{uri}' not available with API token, need proper ticket.)"
USERS_PATH = "/access/groups"  # where User.Modify / Sys.Audit over every user is held


def is_token(authid: str) -> bool:
    """`user@realm!tokenid` is a token's id; a user's has no `!`."""
    return "!" in authid


def refuse_token(authid: str, uri: str) -> None:
    """Operations Proxmox declares `allowtoken => 0` (password changes): tokens get 403."""
    if is_token(authid):
        raise Rejection(403, TOKEN_REFUSED.format(uri=uri))


def check_token_management(state: State, authid: str, userid: str) -> None:
    """List, read, create, change or delete `userid`'s tokens: the user itself, or User.Modify on the user."""
    if authid == userid:
        return
    path = f"/access/users/{userid}"
    if "User.Modify" not in privileges_on(state, authid, path):
        raise forbidden("User.Modify", path)


def check_password_change(state: State, authid: str, userid: str) -> None:
    """Each user changes its own password; User.Modify changes others' but root@pam's only root@pam changes;
    never a token."""
    refuse_token(authid, "/access/password")
    if authid == userid or authid == "root@pam":
        return
    if userid == "root@pam":
        raise Rejection(403, "Permission check failed")
    if "User.Modify" not in privileges_on(state, authid, USERS_PATH):
        raise forbidden("User.Modify", USERS_PATH)


def sees_all_users(state: State, authid: str) -> bool:
    """User.Modify on the users, or Sys.Audit on /access: every user is listed and readable."""
    return "User.Modify" in privileges_on(state, authid, USERS_PATH) or \
        "Sys.Audit" in privileges_on(state, authid, "/access")


def check_user_read(state: State, authid: str, userid: str) -> None:
    """A user reads its own record; anyone else (tokens included) needs `sees_all_users`."""
    if authid != userid and not sees_all_users(state, authid):
        raise forbidden("Sys.Audit", "/access")


def check_permissions_read(state: State, authid: str, subject: str) -> None:
    """Effective permissions of oneself or of one's own tokens; of anyone else with Sys.Audit on /access."""
    if subject == authid or subject.partition("!")[0] == authid:
        return
    if "Sys.Audit" not in privileges_on(state, authid, "/access"):
        raise forbidden("Sys.Audit", "/access")
