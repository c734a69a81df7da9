"""The one exception tree of sockhop.

    SockhopError
    ├── AddressError            a name, service or port that cannot be used
    │   ├── UnknownHostError
    │   ├── UnknownServiceError
    │   ├── PortRangeError
    │   ├── AddressInUseError
    │   └── PrivilegedPortError
    ├── EngineError             a model asked to do what it cannot (fork with UDP, ...)
    ├── UsageError              options that do not go together
    ├── LocalProtocolError      we were asked to send something the protocol forbids
    └── RemoteProtocolError     the peer sent something the protocol forbids; carries a reply hint

Every message is one line a user can act on; the CLI prints it as it is, never a traceback. The class docstring
is the default message.
"""

from __future__ import annotations


class SockhopError(Exception):
    """sockhop failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class AddressError(SockhopError):
    """That address cannot be used."""


class UnknownHostError(AddressError):
    """Unknown host."""


class UnknownServiceError(AddressError):
    """Unknown service name."""


class PortRangeError(AddressError):
    """A port number must be between 0 and 65535."""


class AddressInUseError(AddressError):
    """That address is already in use."""


class PrivilegedPortError(AddressError):
    """Ports below 1024 need privilege."""


class EngineError(SockhopError):
    """The engine cannot run that way."""


class UsageError(SockhopError):
    """Wrong use of the command."""


class LocalProtocolError(SockhopError):
    """This side broke the protocol."""


class RemoteProtocolError(SockhopError):
    """The peer broke the protocol.

    ``hint`` is the reply the protocol suggests sending before closing (an HTTP status, an SMTP code, a DNS rcode).
    """

    def __init__(self, message: str | None = None, *, hint: int | None = None) -> None:
        super().__init__(message)
        self.hint = hint
