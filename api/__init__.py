"""gpve API: endpoint declarations, the Proxmox-compatible routes and the HTTPS server."""
