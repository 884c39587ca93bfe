"""What the data plane can fail with: one line for the user each."""


class DataPlaneError(Exception):
    """A problem the user can act on; str() is one line that says what to do."""


class BanTableFull(DataPlaneError):
    """A ban map is at capacity; existing bans are never evicted to make room."""
