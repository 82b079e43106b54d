"""One exception family; every message is one line that names the culprit."""

# A reader's error names the file and what is wrong within this many characters (long library messages are
# cut to what matters by sources/guard.py; this cap is the backstop).
MAX_MESSAGE = 200


def one_line(message: str, limit: int | None = None) -> str:
    text = " ".join(str(message).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


class ModelDeltaError(Exception):
    """A user-facing failure: bad spec, unreadable file, nothing to compare."""

    limit: int | None = None

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(one_line(message, self.limit), *args)


class SourceError(ModelDeltaError):
    """A checkpoint could not be found or read."""

    limit = MAX_MESSAGE


class AlignmentError(ModelDeltaError):
    """Two checkpoints cannot be paired (no tensors in common)."""
