from .loading import LoadImageFromFileSafe, decode_image_rgb  # noqa: F401
