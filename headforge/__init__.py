"""headforge: portrait photos and multi-view captures to 3D heads and the assets built from them."""

__version__ = "0.1.0"
