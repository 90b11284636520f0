"""The one exception tree of the wire protocol."""


class FluentForwardError(Exception):
    """Root of every error this package raises."""


class ProtocolError(FluentForwardError):
    """The peer sent bytes that are not a valid forward-protocol message.

    ``reason`` is a short, stable, machine-friendly word (used as a metric label);
    the message text adds detail for humans.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class HandshakeError(FluentForwardError):
    """The shared-key handshake failed (wrong key, bad digest, refused user)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
