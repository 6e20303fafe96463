from .stream_accuracy import StreamAccuracy  # noqa: F401
