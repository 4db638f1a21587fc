"""Scene representations: meshes, Gaussian splats, neural fields (hash grid, tri-plane, tri-grid); rigs later."""
