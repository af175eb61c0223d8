"""The one registry every endpoint module declares into."""

from api.schema import Registry

API = Registry()


def load_endpoints() -> Registry:
    """Import every endpoint module so that its declarations register."""
    from api.compat import (  # noqa: F401
        access,
        cluster,
        cluster_config,
        docs,
        nodes,
        pools,
        qemu,
        qemu_cloudinit,
        qemu_config,
        qemu_migrate,
        qemu_power,
        qemu_snapshots,
        storage,
    )
    from api.native import cluster as native_cluster  # noqa: F401
    from api.native import (
        events,  # noqa: F401
        migration,  # noqa: F401
    )

    return API
