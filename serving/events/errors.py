"""The event stores' error (its own module so the store modules can share it)."""


class EventStoreError(RuntimeError):
    """The store cannot be opened or used (bad URL, newer schema, unreachable server, an
    erasure key that is not the one the store's erasure list was written with)."""
