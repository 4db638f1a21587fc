"""headforge: portrait photos and multi-view captures to 3D heads and the assets built from them."""

from headforge.threads import apply_environment_defaults

__version__ = "0.1.0"

# Before torch (and its OpenMP runtime) loads: passive OpenMP waiting and a thread count from the cores this
# process may use, unless the user set them (see headforge/threads.py).
apply_environment_defaults()
