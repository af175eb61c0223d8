"""/access/domains: the authentication realms (pve-access-control `PVE/API2/Domains.pm`).

The realms are Proxmox's built-in `pam` and `pve`; their `comment` and `default` marker change through the log.
Other realm types (`ldap`, `ad`, `openid`) are declared, as Proxmox declares them, and answer 400 until they are
supported. Reading the list is open to anyone (Proxmox's login box needs it); one realm's settings need
Realm.Allocate or Sys.Audit on `/access/realm`, changes Realm.Allocate there.
"""

from __future__ import annotations

from api.context import Ctx
from api.registry import API
from api.returns import BOOL, STR, array, obj
from api.schema import Param, Permission
from api.services import access

REALM = Param("realm", optional=False, format="pve-realm", max_length=32, location="path",
              description="Authentication domain ID")
REALM_TYPES = ("ad", "ldap", "openid", "pam", "pve")
TFA_TYPE = {"type": "string", "enum": ["yubico", "oath"]}
REALM_ROW = obj({"realm": STR, "type": STR}, {"comment": STR, "default": BOOL, "tfa": TFA_TYPE})
REALM_SETTINGS = obj({"type": STR, "digest": STR}, {"comment": STR, "default": BOOL, "tfa": STR, "plugin": STR})
ALLOCATE = Permission("Realm.Allocate", "/access/realm")

# The options realms of other types take (ldap, ad, openid), declared so that a client sending them is told the
# type is not supported rather than that its parameters are unknown.
_OTHER = "Option of realm types ldap, ad or openid (not supported here yet)."
OTHER_REALM_OPTIONS = [
    *(Param(name, max_length=256, description=_OTHER) for name in (
        "base_dn", "bind_dn", "client-id", "client-key", "group_dn", "issuer-url", "server1", "server2",
        "group_name_attr", "groups-claim", "user_attr", "domain")),
    *(Param(name, description=_OTHER) for name in (
        "acr-values", "capath", "cert", "certkey", "filter", "group_classes", "group_filter", "password", "prompt",
        "scopes", "sync-defaults-options", "sync_attributes", "user_classes", "username-claim")),
    *(Param(name, "boolean", description=_OTHER) for name in (
        "autocreate", "case-sensitive", "groups-autocreate", "groups-overwrite", "query-userinfo", "secure",
        "verify")),
    Param("mode", enum=("ldap", "ldaps", "ldap+starttls"), description=_OTHER),
    Param("port", "integer", minimum=1, maximum=65535, description=_OTHER),
    Param("sslversion", enum=("tlsv1", "tlsv1_1", "tlsv1_2", "tlsv1_3"), description=_OTHER),
]
REALM_OPTIONS = [
    Param("comment", max_length=4096, description="Description."),
    Param("default", "boolean", description="Use this as default realm."),
    Param("tfa", max_length=128, description="Two-factor authentication of the realm (not supported here yet)."),
    Param("check-connection", "boolean", description="Check the bind connection (ldap and ad realms only)."),
    *OTHER_REALM_OPTIONS,
]


@API.endpoint("GET", "/access/domains", permission=Permission(check="public"), returns=array(REALM_ROW))
async def list_realms(ctx: Ctx, p: dict) -> list:
    """Authentication domains, for the login box (no login needed)."""
    return access.realm_list(ctx)


@API.endpoint("POST", "/access/domains", permission=ALLOCATE, returns={"type": "null"},
              params=[Param("realm", optional=False, format="pve-realm", max_length=32,
                            description="Authentication domain ID"),
                      Param("type", optional=False, enum=REALM_TYPES, description="Realm type."), *REALM_OPTIONS])
async def create_realm(ctx: Ctx, p: dict) -> None:
    """Add an authentication server: refused, since pam and pve exist once and other types are not supported."""
    await access.create_realm(ctx, p["realm"], p["type"])


@API.endpoint("GET", "/access/domains/{realm}", params=[REALM], returns=REALM_SETTINGS,
              permission=Permission(("Realm.Allocate", "Sys.Audit"), "/access/realm"))
async def get_realm(ctx: Ctx, p: dict) -> dict:
    """A realm's settings, with the `digest` a change may give."""
    return access.realm_settings(ctx, p["realm"])


@API.endpoint("PUT", "/access/domains/{realm}", permission=ALLOCATE, returns={"type": "null"},
              params=[REALM, *REALM_OPTIONS, Param("delete", format="pve-configid-list", max_length=4096,
                                                   description="Settings to delete."),
                      Param("digest", max_length=64, description="The digest the change expects (from a read).")])
async def update_realm(ctx: Ctx, p: dict) -> None:
    """Change a realm's `comment` or `default` marker (one realm is the default: setting it moves it)."""
    await access.update_realm(ctx, p["realm"], {k: v for k, v in p.items() if k != "realm"})


@API.endpoint("DELETE", "/access/domains/{realm}", params=[REALM], permission=ALLOCATE, returns={"type": "null"})
async def delete_realm(ctx: Ctx, p: dict) -> None:
    """Delete an authentication server: refused for the built-in pam and pve."""
    access.delete_realm(ctx, p["realm"])
