"""The host name each component of the distributed test deployment reports: its own, as on a host of its own.

Airflow records the host of every job (scheduler, triggerer) and task try (``[core] hostname_callable``);
on one machine they would all be the same. ``DistributedAirflowDeployment`` points that setting here and
gives each component ``NOXUS_COMPONENT_HOSTNAME`` (its task processes inherit it), so a test can tell
which triggerer holds a trigger and which worker ran a try.
"""

from __future__ import annotations

import os
import socket

HOSTNAME_VARIABLE = "NOXUS_COMPONENT_HOSTNAME"


def hostname() -> str:
    """The component's name, else the machine's."""
    return os.environ.get(HOSTNAME_VARIABLE) or socket.getfqdn()
