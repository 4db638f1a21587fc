from headforge.renderers.mesh_raster import Rasterization as Rasterization  # noqa: I001
from headforge.renderers.mesh_raster import rasterize as rasterize
from headforge.renderers.mesh_shading import antialias as antialias
from headforge.renderers.mesh_shading import interpolate as interpolate
from headforge.renderers.mesh_shading import texture as texture
