"""Read and write :class:`TexturedMesh` as OBJ (+MTL +texture), PLY and GLB/GLTF.

Reading
- OBJ is parsed here (not by trimesh) so the file's own ``v`` list is the vertex list, in order:
  faces index it directly, UVs stay per corner (``vt`` indices), polygons are fan-triangulated.
  ``v x y z r g b`` vertex colours are read. Materials come from ``mtllib``; the ``map_Kd`` images of
  the used materials become the texture (several are packed side by side into one atlas; a material
  without an image contributes a small swatch of its ``Kd`` colour).
- An OBJ with UVs and no ``mtllib`` (common for scans, e.g. the LPS head) uses ``texture_path`` if
  given, else the only image file (.png/.jpg/.jpeg/.tif/.tiff/.bmp) in its folder, if exactly one.
- A missing MTL file, or a missing image named by ``map_Kd``, is an ``InputError`` naming the file and
  the fix. Pass ``require_texture=False`` to load such a mesh with no texture instead (documented
  fallback, never silent: the caller opts in). An MTL ``Kd`` that is not three finite numbers, and a
  texture that is not a whole image, are ``InputError`` s naming the file (and the MTL line).
- A mesh that ends up with neither a texture nor vertex colours loads (its geometry is usable) but
  prints one line to stderr, ``warning: FILE has no texture; the capture will be uniformly coloured``:
  a deliberate choice, so that a capture rendered from it is never uniformly grey without a word.
- Every file is read through :mod:`headforge.io.files` (missing, folder, symlink loop, permissions).
- PLY and GLB/GLTF go through trimesh (``process=False``); scenes are flattened with their node
  transforms and concatenated; glTF ``baseColorTexture`` (trimesh already turns glTF's v-down UVs into
  the OBJ convention) or vertex colours are kept.
- Formats that split vertices at UV seams (glTF always does) are welded back: vertices with exactly
  equal positions become one (first occurrence keeps its place, so a file without duplicates keeps
  its order) while ``uvs``/``faces_uv`` keep the per-corner UVs. ``weld=False`` keeps the file's list.

Writing (every file goes through :func:`headforge.atomic.atomic_path`; the OBJ/GLB/PLY itself is
renamed into place last, so a failed save never leaves a complete-looking mesh):
- :func:`save_obj`: ``name.obj`` + ``name.mtl`` + ``name.png``; per-corner UVs written as ``vt``.
- :func:`save_glb`: binary glTF built by :mod:`headforge.io.gltf`, with a PBR ``baseColorTexture``
  (seam vertices split, v flipped to glTF's convention).
- :func:`save_ply`: binary PLY with vertex colours (sampled from the texture when there are none).
"""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headforge.atomic import atomic_path
from headforge.errors import InputError, MeshError
from headforge.geometry.bilinear import bilinear_image
from headforge.io.files import is_missing, read_bytes, read_pil_image, require_finite, resolve_input
from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import AccessorType, BufferTarget, Material, Node, Primitive
from headforge.representations.mesh import TexturedMesh, uv_to_texel

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# ---------------------------------------------------------------------------------------------- loading
def load_mesh(path: str | Path, *, texture_path: str | Path | None = None, weld: bool = True,
              require_texture: bool = True) -> TexturedMesh:
    """Load an OBJ, PLY, GLB or GLTF file as a validated :class:`TexturedMesh` (see module docstring)."""
    path = Path(path)
    if is_missing(path):
        raise InputError("mesh file does not exist", path=path, fix="check the path (and the working directory)")
    resolve_input(path, what="mesh file")  # a folder, a symlink loop, no read permission
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"unsupported mesh format {path.suffix!r}", path=path,
                         fix=f"convert it to one of {', '.join(MESH_SUFFIXES)}")
    if suffix == ".obj":
        mesh = read_obj(path, texture_path=texture_path, require_texture=require_texture)
    else:
        mesh = _load_with_trimesh(path)
        if texture_path is not None:
            mesh = replace(mesh, texture=read_texture(Path(texture_path)))
    if mesh.num_faces == 0:
        raise MeshError("mesh has no faces", path=path,
                        fix="export the surface with its triangles (a point cloud is not a mesh)")
    if weld:
        mesh = weld_vertices(mesh)
    mesh = mesh.validate(path)
    if not mesh.has_texture and mesh.vertex_colors is None:
        # Deliberate: an untextured mesh is usable (geometry, head frame), so it loads, but never silently.
        print(f"warning: {path} has no texture; the capture will be uniformly coloured", file=sys.stderr)
    return mesh


def read_texture(path: Path) -> torch.Tensor:  # -> [H, W, 3] float32 in [0, 1]
    """A texture image as RGB; a missing file, or one that is not a whole image, is an InputError."""
    fix = "put the image next to the mesh (or fix the map_Kd line in the MTL)"
    if is_missing(path):
        raise InputError("texture image does not exist", path=path, fix=fix)
    im = read_pil_image(path, "texture image", fix=None)
    try:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:  # modes PIL cannot turn into RGB (e.g. some 32-bit float TIFFs)
        raise InputError(f"texture image in mode {im.mode} cannot be read as RGB ({e})", path=path,
                         fix="re-save it as an 8-bit RGB PNG or JPEG") from None
    return torch.from_numpy(rgb)


def weld_vertices(mesh: TexturedMesh) -> TexturedMesh:
    """Merge vertices with exactly equal positions; first occurrences keep their order."""
    v = mesh.vertices.numpy()
    _, first, inverse = np.unique(v, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(v):
        return mesh
    order = np.argsort(first)  # unique rows sorted by first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    remap = torch.from_numpy(rank[inverse.reshape(-1)]).long()  # [V] old -> new
    keep = torch.from_numpy(first[order]).long()  # [V'] old index of each new vertex
    faces = remap[mesh.faces]
    colors = labels = None
    if mesh.vertex_colors is not None:
        colors = torch.zeros(len(keep), 3).index_add_(0, remap, mesh.vertex_colors)
        colors /= torch.bincount(remap, minlength=len(keep)).clamp_min(1)[:, None]
    if mesh.vertex_labels is not None:
        labels = mesh.vertex_labels[keep]
    return replace(mesh, vertices=mesh.vertices[keep], faces=faces, vertex_colors=colors, vertex_labels=labels)


def _load_with_trimesh(path: Path) -> TexturedMesh:
    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises many types for corrupt files; all mean "unreadable"
        raise MeshError(f"cannot read mesh ({type(e).__name__}: {e})", path=path,
                        fix="the file is corrupt or not a mesh; re-export it") from e
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    elif isinstance(loaded, trimesh.Trimesh):
        geoms = [loaded]
    else:
        geoms = []
    geoms = [g for g in geoms if len(g.faces)]
    if not geoms:
        raise MeshError("mesh has no faces", path=path,
                        fix="export the surface with its triangles (a point cloud is not a mesh)")
    parts = [_from_trimesh(g) for g in geoms]
    return concatenate_meshes(parts)


def _from_trimesh(g) -> TexturedMesh:
    verts = torch.as_tensor(np.asarray(g.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(g.faces), dtype=torch.int64)
    visual = g.visual
    uvs = faces_uv = texture = colors = None
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None and len(visual.uv) == len(verts):
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            texture = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
            uvs = torch.as_tensor(np.asarray(visual.uv), dtype=torch.float32)
            faces_uv = faces.clone()
        else:
            factor = getattr(material, "baseColorFactor", None)
            if factor is None:
                factor = getattr(material, "main_color", None)
            if factor is not None:
                rgb = torch.as_tensor(np.asarray(factor, dtype=np.float32)[:3]) / 255.0
                colors = rgb.expand(len(verts), 3).clone()
    elif visual.kind == "vertex":
        colors = torch.as_tensor(np.asarray(visual.vertex_colors)[:, :3], dtype=torch.float32) / 255.0
    return TexturedMesh(verts, faces, uvs, faces_uv, texture, colors)


# ---------------------------------------------------------------------------------------------- OBJ
def read_obj(path: Path, *, texture_path: str | Path | None = None,
             require_texture: bool = True) -> TexturedMesh:
    """Parse an OBJ (see the module docstring for the material and texture rules)."""
    text = read_bytes(path, "mesh file").decode("utf-8", errors="replace")  # names, comments: any bytes
    verts: list[list[float]] = []
    colors: list[list[float]] = []
    uvs: list[tuple[float, float]] = []
    tri_v: list[tuple[int, int, int]] = []
    tri_t: list[tuple[int, int, int]] = []
    tri_mat: list[str | None] = []
    mtllibs: list[str] = []
    material: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        tag = parts[0]
        try:
            if tag == "v":
                vals = [float(x) for x in parts[1:7]]
                verts.append(vals[:3] if len(vals) >= 3 else [float(parts[3])])
                if len(vals) >= 6:
                    colors.append(vals[3:6])
            elif tag == "vt":
                uvs.append((float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0))
            elif tag == "f":
                vi, ti = [], []
                for tok in parts[1:]:
                    idx = tok.split("/")
                    a = int(idx[0])
                    vi.append(a - 1 if a > 0 else len(verts) + a)
                    b = int(idx[1]) if len(idx) > 1 and idx[1] else 0
                    ti.append(b - 1 if b > 0 else (len(uvs) + b if b < 0 else -1))
                if len(vi) < 3:
                    raise ValueError("a face needs at least 3 vertices")
                for k in range(1, len(vi) - 1):  # fan triangulation of polygons
                    tri_v.append((vi[0], vi[k], vi[k + 1]))
                    tri_t.append((ti[0], ti[k], ti[k + 1]))
                    tri_mat.append(material)
            elif tag == "mtllib":
                mtllibs.append(line.strip()[len("mtllib"):].strip())
            elif tag == "usemtl":
                material = line.strip()[len("usemtl"):].strip() or None
        except (ValueError, IndexError) as e:
            raise MeshError(f"line {lineno} cannot be parsed ({e}): {line[:80]!r}", path=path,
                            fix="the file is corrupt or not an OBJ; re-export it") from e
    if not verts:
        raise MeshError("OBJ has no vertices", path=path, fix="the file is empty or not an OBJ; re-export it")
    if not tri_v:
        raise MeshError("mesh has no faces", path=path,
                        fix="export the surface with its triangles (a point cloud is not a mesh)")
    vertices = torch.tensor(verts, dtype=torch.float32)
    faces = torch.tensor(tri_v, dtype=torch.int64)
    vcolors = None
    if len(colors) == len(verts):
        c = torch.tensor(colors, dtype=torch.float32)
        vcolors = (c / 255.0 if float(c.max()) > 1.0 else c).clamp(0, 1)
    if not uvs:
        return TexturedMesh(vertices, faces, vertex_colors=vcolors)
    uv_t = torch.tensor(uvs, dtype=torch.float32)
    faces_uv = torch.tensor(tri_t, dtype=torch.int64)
    if bool((faces_uv < 0).any()):  # corners without vt share one extra (0, 0) uv
        uv_t = torch.cat([uv_t, uv_t.new_zeros(1, 2)])
        faces_uv[faces_uv < 0] = len(uv_t) - 1
    base = TexturedMesh(vertices, faces, uv_t, faces_uv, None, vcolors)
    if texture_path is not None:
        return replace(base, texture=read_texture(Path(texture_path)))
    if not mtllibs:
        images = sorted(p for p in path.parent.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return replace(base, texture=read_texture(images[0])) if len(images) == 1 else base
    library = _read_mtl_libraries(path, mtllibs, require_texture)
    used = list(dict.fromkeys(tri_mat))
    images: dict[str | None, torch.Tensor] = {}
    for name in used:
        entry = library.get(name) if name is not None else None
        if entry is not None and entry[1] is not None:
            if entry[1].is_file() or require_texture:
                images[name] = read_texture(entry[1])
    if not images:
        return base
    if len(used) == 1:
        return replace(base, texture=images[used[0]])
    swatches = [images.get(m, _swatch(library.get(m, (None, None))[0] if m else None)) for m in used]
    atlas, spans = _pack_atlas(swatches)
    mat_index = torch.tensor([used.index(m) for m in tri_mat])  # [F]
    corner_uv = uv_t[faces_uv].clone()  # [F, 3, 2]
    u = corner_uv[..., 0]
    u = torch.where((u < 0) | (u > 1), u - u.floor(), u)
    u0, du = spans[mat_index, 0, None], spans[mat_index, 1, None]
    corner_uv[..., 0] = u0 + u * du
    return replace(base, uvs=corner_uv.reshape(-1, 2), faces_uv=torch.arange(3 * len(faces)).reshape(-1, 3),
                   texture=atlas)


def _read_mtl_libraries(obj_path: Path, names: list[str], require_texture: bool
                        ) -> dict[str, tuple[list[float] | None, Path | None]]:
    """material name -> (Kd, map_Kd path) over all the OBJ's material libraries."""
    library: dict[str, tuple[list[float] | None, Path | None]] = {}
    for name in names:
        mtl = obj_path.parent / name.replace("\\", "/")
        if is_missing(mtl):
            if require_texture:
                raise InputError(f"the OBJ names material library {name!r}, which does not exist", path=mtl,
                                fix="put the .mtl (and its textures) next to the OBJ, or load with "
                                    "require_texture=False to read the geometry without materials")
            continue
        current = None
        text = read_bytes(mtl, "material library", allow_empty=True).decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "newmtl":
                current = line.strip()[len("newmtl"):].strip()
                library[current] = (None, None)
            elif current is not None and parts[0] == "Kd" and len(parts) >= 4:
                library[current] = (_kd(parts[1:4], mtl, lineno), library[current][1])
            elif current is not None and parts[0] == "map_Kd" and len(parts) >= 2:
                rest = line.strip()[len("map_Kd"):].strip()
                file = parts[-1] if rest.startswith("-") else rest
                image = mtl.parent / file.replace("\\", "/")
                if not image.is_file() and (mtl.parent / Path(file.replace("\\", "/")).name).is_file():
                    image = mtl.parent / Path(file.replace("\\", "/")).name  # absolute path from another machine
                library[current] = (library[current][0], image)
    return library


def _kd(tokens: list[str], mtl: Path, lineno: int) -> list[float]:
    """An MTL ``Kd r g b`` colour: three finite numbers."""
    try:
        rgb = [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"line {lineno}: Kd must be three numbers, got {' '.join(tokens)!r}", path=mtl,
                         fix="write the diffuse colour as `Kd r g b` with numbers in [0, 1]") from None
    require_finite(np.array(rgb), mtl, f"line {lineno}: Kd", fix="write the diffuse colour as numbers in [0, 1]")
    return rgb


def _swatch(kd: list[float] | None) -> torch.Tensor:  # [8, 8, 3] solid colour for untextured materials
    return torch.tensor(kd if kd is not None else [0.8, 0.8, 0.8], dtype=torch.float32).clamp(0, 1).expand(8, 8, 3)


def _pack_atlas(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images side by side at a common height. -> atlas [H, W, 3], spans [N, 2] (u start, u width)."""
    h = max(im.shape[0] for im in images)
    resized = []
    for im in images:
        w = max(1, round(im.shape[1] * h / im.shape[0]))
        if im.shape[:2] != (h, w):
            im = torch.nn.functional.interpolate(im.permute(2, 0, 1)[None], size=(h, w), mode="bilinear",
                                                 align_corners=False)[0].permute(1, 2, 0)
        resized.append(im)
    widths = torch.tensor([im.shape[1] for im in resized], dtype=torch.float32)
    total = float(widths.sum())
    starts = torch.cumsum(widths, 0) - widths
    return torch.cat(resized, 1).contiguous(), torch.stack([starts / total, widths / total], 1)


def concatenate_meshes(parts: list[TexturedMesh]) -> TexturedMesh:
    """One mesh from several; textures are packed into one atlas, colours default to grey."""
    if len(parts) == 1:
        return parts[0]
    offsets = torch.tensor([0] + [p.num_vertices for p in parts]).cumsum(0)
    vertices = torch.cat([p.vertices for p in parts])
    faces = torch.cat([p.faces + offsets[i] for i, p in enumerate(parts)])
    colors = None
    if any(p.vertex_colors is not None for p in parts):
        colors = torch.cat([p.vertex_colors if p.vertex_colors is not None
                            else torch.full((p.num_vertices, 3), 0.8) for p in parts])
    if not any(p.has_texture for p in parts):
        return TexturedMesh(vertices, faces, vertex_colors=colors)
    images = [p.texture if p.has_texture else _swatch(None if p.vertex_colors is None
                                                      else p.vertex_colors.mean(0).tolist()) for p in parts]
    atlas, spans = _pack_atlas(images)
    corner_uvs = []
    for i, p in enumerate(parts):
        uv = p.uvs[p.faces_uv].reshape(-1, 2).clone() if p.has_texture else torch.full((3 * p.num_faces, 2), 0.5)
        u = uv[:, 0]
        uv[:, 0] = spans[i, 0] + torch.where((u < 0) | (u > 1), u - u.floor(), u) * spans[i, 1]
        corner_uvs.append(uv)
    uvs = torch.cat(corner_uvs)
    return TexturedMesh(vertices, faces, uvs, torch.arange(len(uvs)).reshape(-1, 3), atlas, colors)


def format_obj(mesh: TexturedMesh, mtl_name: str | None) -> str:
    lines = ["# written by headforge"]
    if mtl_name:
        lines.append(f"mtllib {mtl_name}")
    v = mesh.vertices.double().numpy()
    if mesh.vertex_colors is not None and not mesh.has_texture:
        vc = np.concatenate([v, mesh.vertex_colors.double().numpy()], 1)
        lines.append(_rows("v %.9g %.9g %.9g %.6g %.6g %.6g", vc))
    else:
        lines.append(_rows("v %.9g %.9g %.9g", v))
    f = mesh.faces.numpy() + 1
    if mesh.uvs is not None and mesh.faces_uv is not None:
        lines.append(_rows("vt %.9g %.9g", mesh.uvs.double().numpy()))
        if mtl_name:
            lines.append("usemtl material0")
        ft = mesh.faces_uv.numpy() + 1
        lines.append(_rows("f %d/%d %d/%d %d/%d", np.stack([f, ft], 2).reshape(-1, 6)))
    else:
        lines.append(_rows("f %d %d %d", f))
    return "\n".join(lines) + "\n"


def _rows(fmt: str, table: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, table, fmt=fmt)
    return buf.getvalue().rstrip("\n")


# ---------------------------------------------------------------------------------------------- saving
def save_obj(mesh: TexturedMesh, path: str | Path) -> Path:
    """Write ``path`` (.obj) with ``.mtl`` and ``.png`` siblings when the mesh has a texture."""
    path = Path(path)
    written: list[Path] = []
    try:
        mtl_name = None
        if mesh.has_texture:
            png, mtl = path.with_suffix(".png"), path.with_suffix(".mtl")
            _save_png(mesh.texture, png)
            written.append(png)
            with atomic_path(mtl) as tmp:
                tmp.write_text(f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {png.name}\n")
            written.append(mtl)
            mtl_name = mtl.name
        with atomic_path(path) as tmp:
            tmp.write_text(format_obj(mesh, mtl_name))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return path


def save_glb(mesh: TexturedMesh, path: str | Path) -> Path:
    """Binary glTF through :class:`headforge.io.gltf.GltfBuilder`: one node, one triangle primitive.

    A textured mesh gets a PBR material (metallic 0, roughness 1) with the texture as an embedded PNG
    ``baseColorTexture``; vertices are split at UV seams (one glTF vertex per distinct (vertex, uv)
    corner pair, ordered by vertex so that welding restores the order) and v is flipped to glTF's
    top-left origin. Vertex colours go to COLOR_0 as normalized uint8 RGBA, stored as given.
    """
    path = Path(path)
    v, f = mesh.vertices.numpy().astype(np.float32), mesh.faces.numpy()
    builder = GltfBuilder()
    vertex = BufferTarget.ARRAY_BUFFER
    material = None
    if mesh.has_texture:
        pairs = np.stack([f.reshape(-1), mesh.faces_uv.numpy().reshape(-1)], 1)
        uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
        uv = mesh.uvs.numpy().astype(np.float32)[uniq[:, 1]]
        uv = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1).astype(np.float32)  # OBJ v-up -> glTF v-down
        v, f = v[uniq[:, 0]], inv.reshape(-1, 3)
        texture = builder.add_texture(builder.add_image_png(_to_uint8(mesh.texture)))
        material = builder.add_material(Material(base_color_texture=texture, metallic_factor=0.0,
                                                 roughness_factor=1.0))
    attributes = {"POSITION": builder.add_accessor(v, AccessorType.VEC3, target=vertex, min_max=True)}
    if mesh.has_texture:
        attributes["TEXCOORD_0"] = builder.add_accessor(uv, AccessorType.VEC2, target=vertex)
    elif mesh.vertex_colors is not None:
        rgba = np.concatenate([_to_uint8(mesh.vertex_colors), np.full((len(v), 1), 255, np.uint8)], 1)
        attributes["COLOR_0"] = builder.add_accessor(rgba, AccessorType.VEC4, target=vertex, normalized=True)
    prim = Primitive(attributes, indices=builder.add_indices(f), material=material)
    node = builder.add_node(Node(name="mesh", mesh=builder.add_mesh([prim], name="mesh")))
    builder.add_scene([node])
    with atomic_path(path) as tmp:
        tmp.write_bytes(builder.to_glb())
    return path


def save_ply(mesh: TexturedMesh, path: str | Path) -> Path:
    """Binary PLY with per-vertex colours (texture sampled at the vertex's corner UVs when needed)."""
    import trimesh

    path = Path(path)
    colors = mesh.vertex_colors
    if colors is None and mesh.has_texture:
        colors = sample_vertex_colors(mesh)
    tm = trimesh.Trimesh(mesh.vertices.numpy().astype(np.float64), mesh.faces.numpy(), process=False,
                         vertex_colors=None if colors is None else _to_uint8(colors))
    with atomic_path(path) as tmp:
        tmp.write_bytes(tm.export(file_type="ply"))
    return path


def sample_vertex_colors(mesh: TexturedMesh) -> torch.Tensor:  # -> [V, 3]
    """Mean of the bilinearly sampled texture over each vertex's corners."""
    tex = mesh.texture  # [H, W, 3]
    st = uv_to_texel(mesh.uvs[mesh.faces_uv.reshape(-1)])  # [3F, 2] in [0, 1], (0, 0) = first texel
    c = bilinear_image(tex, st)  # [3F, 3], clamped at the edges
    idx = mesh.faces.reshape(-1)
    acc = torch.zeros(mesh.num_vertices, 3).index_add_(0, idx, c)
    return acc / torch.bincount(idx, minlength=mesh.num_vertices).clamp_min(1)[:, None]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def _save_png(texture: torch.Tensor, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(_to_uint8(texture)).save(tmp, format="PNG")
