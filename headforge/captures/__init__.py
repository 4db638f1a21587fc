"""Captures: views with cameras, frames and splits, and the file formats they come in. See DESIGN.md."""

from headforge.captures.capture import Capture, CaptureFormat, ColourSpace, Split, View, ViewImage

__all__ = ["Capture", "CaptureFormat", "ColourSpace", "Split", "View", "ViewImage"]
