"""Fails loudly if a pysyncobj upgrade moves a private name gpve depends on."""

from __future__ import annotations

import pysyncobj.syncobj as syncobj_module
from pysyncobj import SyncObj
from pysyncobj.transport import Transport

from engine import pysyncobj_hooks as hooks


def test_pysyncobj_is_the_pinned_version():
    assert hooks.version_ok(), "pysyncobj changed: re-check every hook in engine/pysyncobj_hooks.py"


def test_every_private_name_still_exists():
    for name in hooks.PRIVATE_NAMES["module"]:
        assert hasattr(syncobj_module, name), f"pysyncobj.syncobj.{name} is gone"
    for name in hooks.PRIVATE_NAMES["SyncObj"]:  # methods, or attributes that __init__ sets
        assert hasattr(SyncObj, name) or name in SyncObj.__init__.__code__.co_names, f"SyncObj.{name} is gone"
    for name in hooks.PRIVATE_NAMES["Transport"]:
        assert hasattr(Transport, name), f"Transport.{name} is gone"


def test_the_journal_hook_is_installed():
    assert syncobj_module.createJournal is hooks._create_journal
