"""Neural fields: hash-grid / tri-plane / tri-grid encodings, MLP decoders, density or VolSDF geometry."""

from headforge.representations.fields.decoders import ColorConfig as ColorConfig  # noqa: I001
from headforge.representations.fields.decoders import DensityConfig as DensityConfig
from headforge.representations.fields.decoders import MLPConfig as MLPConfig
from headforge.representations.fields.field import FieldConfig as FieldConfig
from headforge.representations.fields.field import FieldOutput as FieldOutput
from headforge.representations.fields.field import RadianceField as RadianceField
from headforge.representations.fields.hash_grid import HashGridConfig as HashGridConfig
from headforge.representations.fields.hash_grid import HashGridEncoding as HashGridEncoding
from headforge.representations.fields.planes import PlaneConfig as PlaneConfig
from headforge.representations.fields.planes import TriGridEncoding as TriGridEncoding
from headforge.representations.fields.planes import TriPlaneEncoding as TriPlaneEncoding
from headforge.representations.fields.sdf import SDFConfig as SDFConfig
from headforge.representations.fields.sdf import VolSDFConfig as VolSDFConfig
from headforge.representations.fields.sdf import eikonal_loss as eikonal_loss
