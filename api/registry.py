"""The one registry every endpoint module declares into."""

from api.schema import Registry

API = Registry()


def load_endpoints() -> Registry:
    """Import every endpoint module so that its declarations register."""
    from api.compat import (  # noqa: F401
        absent,
        access,
        cluster,
        cluster_config,
        cluster_options,
        docs,
        domains,
        network,
        node_info,
        nodes,
        pools,
        qemu,
        qemu_agent,
        qemu_cloudinit,
        qemu_config,
        qemu_console,
        qemu_migrate,
        qemu_power,
        qemu_snapshots,
        storage,
        storage_config,
    )
    from api.native import (
        batch,  # noqa: F401
        events,  # noqa: F401
        figures,  # noqa: F401
        metrics,  # noqa: F401
        migration,  # noqa: F401
        templates,  # noqa: F401
        vclusters,  # noqa: F401
        webhooks,  # noqa: F401
    )
    from api.native import cluster as native_cluster  # noqa: F401

    return API
