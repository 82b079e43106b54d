"""One exception family; every message is one line that names the culprit."""


class ModelDeltaError(Exception):
    """A user-facing failure: bad spec, unreadable file, nothing to compare."""


class SourceError(ModelDeltaError):
    """A checkpoint could not be found or read."""


class AlignmentError(ModelDeltaError):
    """Two checkpoints cannot be paired (no tensors in common)."""
