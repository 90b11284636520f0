"""audit-forwarder: not yet implemented (see the forwarder issue)."""

import sys


def main() -> int:
    sys.stderr.write("audit-forwarder: not yet implemented\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
