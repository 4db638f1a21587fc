"""Scene representations: meshes, Gaussian splats, neural fields (hash grid, tri-plane, tri-grid), head rigs (rig/)."""
