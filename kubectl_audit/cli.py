"""kubectl audit: the plugin entry point (installed as ``kubectl-audit`` on PATH).

    kubectl audit <resource> <name> [-n ns] ...      the object's audit ConfigMap (kubectl_configmap.py)
    kubectl audit history|diff|bisect|watch ...     the tailer's HTTP API (kubectl_api.py)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from kubectl_audit import api as kubectl_api
from kubectl_audit import configmap as kubectl_configmap

API_COMMANDS = ("history", "diff", "bisect", "watch")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args if not a.startswith("-")), None)
    if first in API_COMMANDS:
        return kubectl_api.main(args)
    return kubectl_configmap.main(args)


if __name__ == "__main__":
    sys.exit(main())
