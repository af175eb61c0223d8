"""Tickets and CSRF tokens: formats, expiry, forgery, another cluster's key."""

from __future__ import annotations

import re

from api import auth

KEY = auth.new_ticket_key_pem()
OTHER_KEY = auth.new_ticket_key_pem()
NOW = 1_790_000_000


def test_ticket_format_is_proxmoxs():
    ticket = auth.make_ticket(KEY, "root@pam", NOW)
    assert re.fullmatch(r"PVE:root@pam:[0-9A-F]{8}::[A-Za-z0-9+/=]+", ticket)
    assert ticket.split(":")[2] == f"{NOW:08X}"
    assert auth.verify_ticket(KEY, ticket, NOW + 10) == "root@pam"


def test_expired_future_forged_and_foreign_tickets_are_refused():
    ticket = auth.make_ticket(KEY, "root@pam", NOW)
    assert auth.verify_ticket(KEY, ticket, NOW + 7200) == "root@pam"
    assert auth.verify_ticket(KEY, ticket, NOW + 7201) is None
    assert auth.verify_ticket(KEY, ticket, NOW - 301) is None
    assert auth.verify_ticket(KEY, ticket.replace("root@pam", "admin@pam"), NOW) is None
    plain, sig = ticket.split("::")
    later = plain[:-8] + f"{NOW + 3600:08X}"
    assert auth.verify_ticket(KEY, f"{later}::{sig}", NOW + 3600) is None
    assert auth.verify_ticket(OTHER_KEY, ticket, NOW) is None
    assert auth.verify_ticket(KEY, "PVE:root@pam:zz::abc", NOW) is None
    assert auth.verify_ticket(KEY, "garbage", NOW) is None


def test_url_encoded_cookie_values_are_accepted():
    from urllib.parse import quote
    ticket = auth.make_ticket(KEY, "root@pam", NOW)
    assert auth.verify_ticket(KEY, quote(ticket, safe=""), NOW) == "root@pam"


def test_csrf_token_is_bound_to_user_and_time():
    token = auth.make_csrf_token("secret", "root@pam", NOW)
    assert re.fullmatch(r"[0-9A-F]{8}:[A-Za-z0-9+/]{43}", token)
    assert auth.verify_csrf_token("secret", token, "root@pam", NOW + 60)
    assert not auth.verify_csrf_token("secret", token, "other@pve", NOW)
    assert not auth.verify_csrf_token("other-secret", token, "root@pam", NOW)
    assert not auth.verify_csrf_token("secret", token, "root@pam", NOW + 7201)
    assert not auth.verify_csrf_token("secret", "nonsense", "root@pam", NOW)
    # a header value with bytes outside ASCII is a wrong token, not a server error
    assert not auth.verify_csrf_token("secret", token.split(":")[0] + ":\xe9\xe9", "root@pam", NOW)
