"""Fails loudly if a pysyncobj upgrade moves a private name gpve depends on."""

from __future__ import annotations

import socket

import pysyncobj.syncobj as syncobj_module
import pysyncobj.tcp_connection as tcp_connection_module
from pysyncobj import SyncObj
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport, Transport

from engine import pysyncobj_hooks as hooks


def test_pysyncobj_is_the_pinned_version():
    assert hooks.version_ok(), "pysyncobj changed: re-check every hook in engine/pysyncobj_hooks.py"


def test_every_private_name_still_exists():
    for name in hooks.PRIVATE_NAMES["module"]:
        assert hasattr(syncobj_module, name), f"pysyncobj.syncobj.{name} is gone"
    for name in hooks.PRIVATE_NAMES["tcp_connection"]:
        assert hasattr(tcp_connection_module, name), f"pysyncobj.tcp_connection.{name} is gone"
    for cls in (SyncObj, Transport, TCPTransport, TcpConnection):
        for name in hooks.PRIVATE_NAMES[cls.__name__]:  # methods, or attributes that __init__ sets
            assert hasattr(cls, name) or name in cls.__init__.__code__.co_names, f"{cls.__name__}.{name} is gone"


def test_the_journal_hook_is_installed():
    assert syncobj_module.createJournal is hooks._create_journal


def test_socket_inet_ntop_works_after_pysyncobj_replaced_it():
    assert socket.inet_ntop(socket.AF_INET, b"\x0a\x05\x00\x01") == "10.5.0.1"
    assert socket.inet_ntop(socket.AF_INET6, b"\xfd" + b"\x00" * 14 + b"\x01") == "fd00::1"
