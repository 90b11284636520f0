"""kubectl audit: not yet implemented (see the ConfigMap and store issues)."""

import sys


def main() -> int:
    sys.stderr.write("kubectl-audit: not yet implemented\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
