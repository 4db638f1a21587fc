"""File formats built from numpy arrays, and guarded file reading (bottom layer: imports numpy, PIL, torch,
headforge.errors and headforge.validation only).

``files``: one guarded way to read files (every failure an ``InputError`` naming the file);
``gltf``: a typed glTF 2.0 / GLB builder; ``glb``: a minimal GLB reader; ``gaussian_splatting``:
the ``KHR_gaussian_splatting`` primitive; ``spz``: Niantic's .spz (versions 2 and 3). See DESIGN.md.
"""
