"""One error tree, so every entry point can turn a failure into a one-line message a person can act on.

`LocalError` means the caller asked for something wrong (bad input, unknown SKU); `RemoteError`
means a peer, bundle or HQ sent something wrong (bad signature, broken chain, wrong store). The split
follows h11's LocalProtocolError/RemoteProtocolError: it tells the operator whose fault it is.
"""


class MeshposError(Exception):
    """Base of every error meshpos raises on purpose; `str(err)` is the message shown to the user."""


class LocalError(MeshposError):
    """The local caller asked for something invalid; nothing was written."""


class RemoteError(MeshposError):
    """Data from another node (bundle, peer, HQ) was invalid; nothing of it was applied."""


class ConfigError(LocalError):
    """The node directory, config file or key is missing or malformed."""


class NotFound(LocalError):
    """A SKU, sale, customer or conflict named by the user does not exist."""


class InputError(LocalError):
    """A value given by the user (quantity, price, CSV cell) is malformed."""


class EncodingError(RemoteError):
    """Bytes that should hold an op or a message could not be decoded."""


class SignatureError(RemoteError):
    """A signature did not verify against the origin's key."""


class ChainError(RemoteError):
    """An op's previous-hash does not match the op before it: something was removed or altered."""


class WrongStore(RemoteError):
    """Data from a node or bundle that belongs to another store."""
