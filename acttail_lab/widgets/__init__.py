"""Interactive notebook widgets (ipywidgets front ends over plain, testable classes)."""
from .projection_picker import ProjectionPicker  # noqa: F401
