"""The forwarder's one exception tree; foreign errors are translated where they enter."""


class ForwarderError(Exception):
    """Root of the forwarder's errors."""


class ConfigError(ForwarderError):
    """Bad configuration found at start-up: fatal, exit status 2."""


class TransportError(ForwarderError):
    """Reaching the tailer failed at one step (connect, proxy, TLS, handshake); retried."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


class AckTimeout(ForwarderError):
    """The tailer did not ack the oldest chunk in time; the connection is dropped and chunks resent."""
