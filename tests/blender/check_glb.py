"""Import headforge's rigged GLB (and its VRM) in Blender and report what Blender sees, as JSON.

Run by the bpy venv (Python 3.11, bpy 5.0.1; tools/install_clients.sh), not by the project's Python:

    .cache/clients/blender/bin/python tests/blender/check_glb.py --glb RIG.glb [--vrm HEAD.vrm] [--quantized Q.glb]
        --out REPORT.json [--renders DIR] [--size 160] [--samples 4]

1. ``bpy.ops.import_scene.gltf`` of the rigged GLB: every mesh object with its shape-key names, every
   armature with its bone names, the actions with what they key (each shape key's largest value, each
   bone's rotation range), the images (name, size).
2. Two renders of the head from the front, with Cycles on the CPU (no denoising, direct light from
   one sun only, so unchanged pixels render identically): all shape keys at 0, then ``jawOpen`` = 1.
   The mouth region is the box (plus a 3 px margin) around the camera projections of the vertices
   that the jawOpen shape key moves (by more than 10 % of its largest offset), before and after the
   move, with this camera. The report counts the pixels that change (any RGBA channel by more than
   0.05) inside and outside that box, and, as a negative control, the same counts for a third render
   with only ``eyeBlinkLeft`` = 1 (its change must fall outside the box). Cycles because it needs no
   GPU: Workbench and Eevee need an OpenGL context (here they ran through EGL software rendering,
   Eevee compiling shaders for ~55 s), which a headless CI machine may lack.
3. With ``--quantized``: the same head exported with ``quantize_targets`` (KHR_mesh_quantization morph deltas),
   imported after the first: its shape keys, and per shape key the largest difference of its positions from the
   float file's (the test holds it to half a quantisation step).
4. With ``--vrm``: the same importer on the VRM file. Blender has no VRM importer built in, so it
   reads the file as plain glTF (extensions ignored); the report lists what it built from it.

Prints nothing but Blender's own log; the JSON goes to ``--out``. Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

HEAD_MESH = "head_mesh"
MOUTH_SHAPE = "jawOpen"
CONTROL_SHAPE = "eyeBlinkLeft"  # negative control: a shape away from the mouth, counted against the same box
CHANGE = 0.05  # an RGBA channel differs by more than this (0..1) -> the pixel changed
MARGIN_PX = 3
NOT_EXPORTED = "glTF_not_exported"


def reset() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def import_gltf(path: Path) -> str:
    result = bpy.ops.import_scene.gltf(filepath=str(path))
    return ",".join(sorted(result))


def importer_helper(obj: bpy.types.Object) -> bool:
    """The importer's own objects (the bones' display shape), kept in a collection it does not export."""
    return any(c.name.startswith(NOT_EXPORTED) for c in obj.users_collection)


def scene_report() -> dict:
    meshes, armatures, empties = {}, {}, []
    for obj in bpy.data.objects:
        if importer_helper(obj):
            continue
        if obj.type == "MESH":
            keys = obj.data.shape_keys
            names = [k.name for k in keys.key_blocks][1:] if keys else []  # [0] is the Basis
            meshes[obj.name] = {"mesh": obj.data.name, "shape_keys": names, "vertices": len(obj.data.vertices)}
        elif obj.type == "ARMATURE":
            armatures[obj.name] = [b.name for b in obj.data.bones]
        elif obj.type == "EMPTY":
            empties.append(obj.name)
    return {"meshes": meshes, "armatures": armatures, "empties": sorted(empties),
            "actions": sorted(a.name for a in bpy.data.actions),
            "action_curves": {a.name: action_curves(a) for a in bpy.data.actions},
            "images": [{"name": i.name, "size": list(i.size)} for i in bpy.data.images if i.size[0] > 0]}


def action_curves(action: bpy.types.Action) -> dict:
    """What an action animates: {shape key: largest keyed value}, {bone: largest change of a rotation
    component over the keys} (Blender 4.4+ keeps F-curves in layers -> strips -> channel bags)."""
    keys, bones = {}, {}
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                for fc in bag.fcurves:
                    values = [k.co[1] for k in fc.keyframe_points]
                    path = fc.data_path
                    if path.startswith('key_blocks["') and path.endswith('"].value'):
                        name = path[len('key_blocks["'):-len('"].value')]
                        keys[name] = max(keys.get(name, 0.0), max(values))
                    elif path.startswith('pose.bones["') and path.endswith('"].rotation_quaternion'):
                        name = path[len('pose.bones["'):-len('"].rotation_quaternion')]
                        bones[name] = max(bones.get(name, 0.0), max(values) - min(values))
    return {"shape_keys": keys, "bone_rotation_range": bones}


def head_object() -> bpy.types.Object:
    found = [o for o in bpy.data.objects if o.type == "MESH" and o.data.name == HEAD_MESH]
    if len(found) != 1:
        raise SystemExit(f"expected one mesh object with mesh data '{HEAD_MESH}', found {[o.name for o in found]}")
    return found[0]


def rest_pose() -> None:
    """No action drives anything; bones at rest; every shape key at 0; the importer's helpers unrendered."""
    for obj in bpy.data.objects:
        obj.hide_render = importer_helper(obj)
        if obj.animation_data:
            obj.animation_data.action = None
        if obj.type == "MESH" and obj.data.shape_keys:
            if obj.data.shape_keys.animation_data:
                obj.data.shape_keys.animation_data.action = None
            for key in obj.data.shape_keys.key_blocks[1:]:
                key.value = 0.0
        if obj.type == "ARMATURE":
            for bone in obj.pose.bones:
                bone.location, bone.scale = (0, 0, 0), (1, 1, 1)
                bone.rotation_quaternion, bone.rotation_euler = (1, 0, 0, 0), (0, 0, 0)
    bpy.context.view_layer.update()


def evaluated_world(obj: bpy.types.Object) -> np.ndarray:  # [V, 3] deformed vertices, Blender world (z up)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    m = np.array(obj.matrix_world)
    co = co.reshape(-1, 3)
    return co @ m[:3, :3].T + m[:3, 3]


def setup_front_render(head: bpy.types.Object, size: int, samples: int) -> bpy.types.Object:
    """Orthographic camera looking at the face (glTF +z is Blender -y), a sun from the front."""
    scene = bpy.context.scene
    pts = evaluated_world(head)
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    cam_data = bpy.data.cameras.new("front")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = float(max(hi[0] - lo[0], hi[2] - lo[2]) * 1.15)
    cam = bpy.data.objects.new("front", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (centre[0], lo[1] - 1.0, centre[2])
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)  # the camera's -z (its view axis) turned to +y
    cam_data.clip_end = 10.0
    scene.camera = cam
    sun_data = bpy.data.lights.new("sun", "SUN")
    sun_data.energy, sun_data.angle = 3.0, 0.0
    sun = bpy.data.objects.new("sun", sun_data)
    scene.collection.objects.link(sun)
    sun.rotation_euler = (np.pi / 2 - 0.3, 0.0, 0.3)
    world = bpy.data.worlds.new("black")
    world.color = (0, 0, 0)
    scene.world = world
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 0
    scene.cycles.seed = 0
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    return cam


def render(path: Path) -> np.ndarray:  # [H, W, 4] float in [0, 1], rows bottom-up (Blender's order)
    bpy.context.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    w, h = image.size
    pixels = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.images.remove(image)
    return pixels.reshape(h, w, 4)


def mouth_box(head: bpy.types.Object, cam: bpy.types.Object, size: int) -> tuple[list[int], int]:
    """Pixel box [x0, y0, x1, y1] (bottom-up rows, inclusive) around the jawOpen vertices, and their count."""
    keys = head.data.shape_keys.key_blocks
    n = len(head.data.vertices)
    basis, opened = np.empty(n * 3), np.empty(n * 3)
    keys[0].data.foreach_get("co", basis)
    keys[MOUTH_SHAPE].data.foreach_get("co", opened)
    offset = np.linalg.norm((opened - basis).reshape(n, 3), axis=1)
    moved = np.flatnonzero(offset > 0.1 * offset.max())
    pts = []
    for value in (0.0, 1.0):
        keys[MOUTH_SHAPE].value = value
        bpy.context.view_layer.update()
        pts.append(evaluated_world(head)[moved])
    keys[MOUTH_SHAPE].value = 0.0
    bpy.context.view_layer.update()
    scene = bpy.context.scene
    uv = np.array([tuple(world_to_camera_view(scene, cam, Vector(p)))[:2] for p in np.concatenate(pts)]) * size
    lo = np.floor(uv.min(0)).astype(int) - MARGIN_PX
    hi = np.ceil(uv.max(0)).astype(int) + MARGIN_PX
    return [int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])], len(moved)


def mouth_check(size: int, samples: int, renders: Path) -> dict:
    rest_pose()
    head = head_object()
    cam = setup_front_render(head, size, samples)
    box, count = mouth_box(head, cam, size)
    neutral = render(renders / "neutral.png")
    head.data.shape_keys.key_blocks[MOUTH_SHAPE].value = 1.0
    bpy.context.view_layer.update()
    opened = render(renders / f"{MOUTH_SHAPE}.png")
    head.data.shape_keys.key_blocks[MOUTH_SHAPE].value = 0.0
    head.data.shape_keys.key_blocks[CONTROL_SHAPE].value = 1.0
    bpy.context.view_layer.update()
    control = render(renders / f"{CONTROL_SHAPE}.png")
    inside = np.zeros(neutral.shape[:2], bool)
    x0, y0, x1, y1 = box
    inside[max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = True
    out = {"engine": bpy.context.scene.render.engine, "size": size, "samples": samples, "moved_vertices": count,
           "mouth_box": box, "box_pixels": int(inside.sum()), "head_pixels": int((neutral[..., 3] > 0.5).sum())}
    for name, image in (("", opened), ("control_", control)):
        changed = (np.abs(image - neutral) > CHANGE).any(-1)  # [H, W], rows bottom-up
        out[f"{name}changed_inside"] = int((changed & inside).sum())
        out[f"{name}changed_outside"] = int((changed & ~inside).sum())
    return out


def shape_key_positions() -> dict[str, np.ndarray]:
    """The head mesh's shape keys as absolute positions [V, 3] (Blender's frame): Basis + delta at weight 1."""
    out = {}
    head = head_object()
    n = len(head.data.vertices)
    for key in head.data.shape_keys.key_blocks:
        co = np.empty(n * 3, np.float64)
        key.data.foreach_get("co", co)
        out[key.name] = co.reshape(n, 3)
    return out


def quantized_check(path: Path, reference: dict[str, np.ndarray]) -> dict:
    """Import the quantized GLB (KHR_mesh_quantization targets) after the float one: its shape keys, and the largest
    per-component difference of each key's positions from the float file's (``reference``, same vertex order)."""
    reset()
    result = import_gltf(path)
    keys = shape_key_positions()
    diff = {name: float(np.abs(co - reference[name]).max()) for name, co in keys.items()
            if name in reference and co.shape == reference[name].shape}
    return {"import": result, **scene_report(), "vertices": len(next(iter(keys.values()))),
            "reference_vertices": len(next(iter(reference.values()))), "key_max_diff": diff}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--glb", type=Path, required=True)
    parser.add_argument("--vrm", type=Path)
    parser.add_argument("--quantized", type=Path, help="the same head with quantize_targets, compared with --glb")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--renders", type=Path)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args(argv)
    report: dict = {"blender": bpy.app.version_string}
    reset()
    report["glb"] = {"import": import_gltf(args.glb), **scene_report()}
    reference = shape_key_positions() if args.quantized is not None else {}
    renders = args.renders or args.out.parent
    renders.mkdir(parents=True, exist_ok=True)
    report["mouth"] = mouth_check(args.size, args.samples, renders)
    if args.vrm is not None:
        reset()
        result = import_gltf(args.vrm)
        rest_pose()
        pts = evaluated_world(head_object())
        report["vrm"] = {"import": result, **scene_report(), "head_min": pts.min(0).tolist(),
                         "head_max": pts.max(0).tolist()}
    if args.quantized is not None:
        report["quantized"] = quantized_check(args.quantized, reference)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:])
