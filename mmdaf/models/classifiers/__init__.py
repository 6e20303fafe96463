# Each component module is imported here so that importing mmdaf registers it.
from .daf_classifier import DAFClassifier  # noqa: F401
