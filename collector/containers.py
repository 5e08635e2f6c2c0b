"""Which container sits behind a host-side veth or tap, where the name or the host can tell.

Name conventions come first because they cost nothing: Proxmox names a CT's host-side veth
`veth<vmid>i<n>` and a VM's tap `tap<vmid>i<n>` (firewall bridges `fwpr<vmid>p<n>`,
`fwln<vmid>i<n>`). Docker's `veth<hex>` names carry nothing, so a Docker resolver maps the
peer's network namespace id to a container (see DockerResolver); it needs root.
"""

import re

PROXMOX_PATTERNS = (
    (re.compile(r"^veth(\d+)i(\d+)$"), "ct"),
    (re.compile(r"^tap(\d+)i(\d+)$"), "vm"),
    (re.compile(r"^fw(?:ln|pr)(\d+)[ip](\d+)$"), "guest"),
)


def container_from_name(name):
    """'veth101i0' -> 'ct101'; None when the name follows no known convention."""
    for pattern, prefix in PROXMOX_PATTERNS:
        m = pattern.match(name)
        if m:
            return "{0}{1}".format(prefix, m.group(1))
    return None
