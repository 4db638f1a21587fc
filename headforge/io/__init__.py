"""File formats built from numpy arrays (bottom layer: imports numpy, PIL and headforge.errors only).

``gltf``: a typed glTF 2.0 / GLB builder; ``glb``: a minimal GLB reader; ``gaussian_splatting``:
the ``KHR_gaussian_splatting`` primitive. See DESIGN.md.
"""
