"""Scene representations: meshes (and, later, Gaussians, hash grids, tri-planes, tri-grids, rigs)."""
