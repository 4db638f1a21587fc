"""The ``external`` multi-view generator: a user's command writes the views, headforge reads them back and checks.

The command is a template split like a shell line (``shlex``; no shell runs it: wrap it in ``sh -c '...'`` for
pipes or variables), each word formatted with

- ``{input}``: the aligned photo we write, ``input.png`` (RGBA: the crop in its alignment convention, the person
  mask as alpha; FaceLift's own preprocessing composites RGBA onto white);
- ``{camera}``: ``input_camera.json``, the photo's camera as an ``opencv_cameras.json`` (its world: the head frame);
- ``{output}``: an empty folder the command must fill with its views and an ``opencv_cameras.json``
  (captures/opencv_json.py; read through ``captures.formats.read_capture``);
- ``{size}``: the requested view side in pixels (``ExternalConfig.size``).

``{input}`` and ``{output}`` are required; any other ``{name}`` is refused. The command runs in its own process
group with a timeout (the group is killed on timeout), stdout and stderr captured; a non-zero exit, a timeout, a
missing or malformed camera file, fewer than ``min_views`` views, non-finite or degenerate cameras, images that do
not match their cameras or each other, cameras not looking at the head (the head-frame origin, the head centre,
behind a camera or outside its image) or in another frame (the head frame's +y not pointing up in a view within
60 degrees of the horizon: FaceLift's own cameras are in Blender's z-up frame and must be converted), and views
without masks that cannot be derived, are each an ``InputError`` naming the command and the fix.

Masks: the views' alpha when they have one; otherwise derived from a uniform background: the median colour of the
image border is the background when at least 90% of the border is within 0.04 of it, and the mask is every pixel
further than that from it (binary). Anything else is refused (write RGBA).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
from torch import Tensor

from headforge.captures.capture import Capture, CaptureFormat, Split, View
from headforge.captures.formats import read_capture
from headforge.captures.images import write_image
from headforge.captures.opencv_json import opencv_json_meta
from headforge.errors import HeadforgeError, InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.stages.avatar import Avatar
from headforge.stages.multiview_base import GeneratorKind, generated_capture, write_generated
from headforge.stages.photo_types import AlignedPhoto
from headforge.validation import Checked, Count, Seconds

__all__ = ["ExternalConfig", "ExternalGenerator", "check_views", "command_words", "derive_mask"]

PLACEHOLDERS = ("input", "camera", "output", "size")
REQUIRED = ("input", "output")
BORDER_TOL = 0.04  # colour distance (max over channels) of background pixels from the border median
BORDER_UNIFORM = 0.9  # fraction of the border that must be background for a mask to be derived
STDERR_TAIL = 2000  # characters of the command's stderr quoted in an error


@dataclass(frozen=True)
class ExternalConfig(Checked):
    size: Annotated[int, at.Ge(16)] = 512  # {size}: the requested view side
    timeout_s: Seconds = 1800.0
    min_views: Count = 4
    overwrite: bool = False


def command_words(template: str, values: dict[str, str]) -> list[str]:
    """The command's argv: the template split with shlex, each word's ``{name}`` fields filled from ``values``."""
    fix = "write the command with {input} (the photo we write) and {output} (the folder it fills), e.g. " \
          "external:'python my_views.py --image {input} --out {output}'"
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise InputError(f"the external command {template!r} cannot be split into words: {e}", fix=fix) from None
    if not words:
        raise InputError("the external command is empty", fix=fix)
    seen: set[str] = set()
    for w in words:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(w) if f is not None]
        except ValueError as e:
            raise InputError(f"the external command word {w!r} is not a valid template: {e}",
                             fix="double literal braces ({{ and }})") from None
        for f in fields:
            if f not in PLACEHOLDERS:
                raise InputError(f"the external command uses {{{f}}}, which is not a placeholder "
                                 f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})", fix=fix)
            seen.add(f)
    missing = [p for p in REQUIRED if p not in seen]
    if missing:
        raise InputError(f"the external command {template!r} lacks {', '.join('{' + m + '}' for m in missing)}",
                         fix=fix)
    return [w.format(**values) for w in words]


def derive_mask(rgb: np.ndarray) -> np.ndarray | None:  # [H, W, 3] in [0, 1] -> [H, W] float32 or None
    """A binary mask from a uniform background (see the module doc); None when the border is not uniform."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [B, 3]
    bg = np.median(border, axis=0)
    if float((np.abs(border - bg).max(-1) <= BORDER_TOL).mean()) < BORDER_UNIFORM:
        return None
    return (np.abs(rgb - bg).max(-1) > BORDER_TOL).astype(np.float32)


def check_views(capture: Capture, *, min_views: int, where: str, fix: str) -> Tensor:
    """Load and check every view of a read-back capture -> RGBA [N, H, W, 4] (masks derived where needed)."""
    n = len(capture)
    if n < min_views:
        raise InputError(f"{where} wrote {n} view(s); at least {min_views} are needed", path=capture.source_path,
                         fix=fix)
    sizes = {(int(w), int(h)) for w, h in zip(capture.native_cameras.width, capture.native_cameras.height, strict=True)}
    if len(sizes) != 1:
        raise InputError(f"{where} wrote views of different sizes {sorted(sizes)}", path=capture.source_path,
                         fix="write every view at one size")
    out = []
    for i in range(n):
        v = capture.load(i)  # checks the image against its camera's size
        alpha = v.alpha
        if alpha is None:
            m = derive_mask(v.rgb.numpy())
            if m is None:
                raise InputError(f"view {i} ({capture.native_cameras.name(i)}) has no alpha channel and no uniform "
                                 "background to derive its mask from", path=capture.views[i].image_path,
                                 fix="write RGBA views (the subject's mask in alpha) or use a plain background")
            alpha = torch.from_numpy(m)
        if float(alpha.max()) <= 0:
            raise InputError(f"view {i} ({capture.native_cameras.name(i)}) is empty (its mask covers nothing)",
                             path=capture.views[i].image_path, fix=fix)
        out.append(torch.cat([v.rgb, alpha[..., None]], -1))
    return torch.stack(out)


def check_frame(cameras: Cameras, centre: Tensor, *, where: str, path: Path) -> None:
    """The cameras look at the head (``centre`` [3] in front of every camera, inside its image) and are in the
    head frame (+y up in the views within 60 degrees of the horizon)."""
    fix = ("write the cameras in the head frame of input_camera.json (metres, +y up, the face toward +z, the "
           "head centre at the origin); convert FaceLift's Blender z-up cameras first")
    uv, z = project_points(cameras.to(dtype=torch.float64), centre.double()[None])  # [N, 1, 2], [N, 1]
    for i in range(len(cameras)):
        w, h = int(cameras.width[i]), int(cameras.height[i])
        u, v = (float(x) for x in uv[i, 0])
        if not (float(z[i, 0]) > 0 and 0 <= u < w and 0 <= v < h):
            raise InputError(f"{where}: camera {i} ({cameras.name(i)}) does not look at the head: the head centre "
                             f"projects to ({u:.0f}, {v:.0f}) at depth {float(z[i, 0]):.3g}", path=path, fix=fix)
    forward = cameras.forward_axes().double()  # [N, 3]
    image_down = cameras.world_to_camera[:, 1, :3].double()  # [N, 3] the camera's +y (down) in the world
    level = forward[:, 1].abs() < np.sin(np.radians(60.0))
    wrong = level & (image_down[:, 1] > -0.5)  # world +y should point up in the image
    if bool(wrong.any()):
        i = int(wrong.nonzero()[0])
        raise InputError(f"{where}: camera {i} ({cameras.name(i)}) is not upright in the head frame (world +y does "
                         "not point up in its image): the cameras seem to be in another frame", path=path, fix=fix)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


@dataclass(frozen=True)
class ExternalGenerator:
    command: str
    config: ExternalConfig = ExternalConfig()
    kind: GeneratorKind = GeneratorKind.EXTERNAL

    def generate(self, photo: AlignedPhoto, head: Avatar | None, out_dir: Path) -> Capture:
        out_dir = Path(out_dir)
        if out_dir.exists() and not self.config.overwrite:
            raise InputError("output directory already exists", path=out_dir,
                             fix="choose another --out or pass --overwrite")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.external-", dir=out_dir.parent))
        try:
            capture = self._run(photo, head, work)
            return write_generated(capture, out_dir, overwrite=self.config.overwrite)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, photo: AlignedPhoto, head: Avatar | None, work: Path) -> Capture:
        image, camera_file, output = work / "input.png", work / "input_camera.json", work / "output"
        output.mkdir()
        write_image(image, torch.cat([photo.image, photo.person_mask[..., None]], -1).numpy())
        meta = opencv_json_meta(Capture(photo.camera, (View(image),), Split((0,), ())), ["input.png"])
        from headforge.captures.format_base import json_text

        camera_file.write_text(json_text(meta))
        argv = command_words(self.command, {"input": str(image), "camera": str(camera_file), "output": str(output),
                                            "size": str(self.config.size)})
        where = f"the external generator command {self.command!r}"
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True, cwd=work)
        except OSError as e:
            raise InputError(f"{where} cannot be started: {e}",
                             fix="check the program name and that it is installed and executable") from None
        try:
            _, err = proc.communicate(timeout=self.config.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise InputError(f"{where} did not finish within {self.config.timeout_s:g} s and was stopped",
                             fix="raise ExternalConfig.timeout_s (--generator-timeout) or make the command faster"
                             ) from None
        except BaseException:
            _kill_group(proc)
            raise
        if proc.returncode != 0:
            raise InputError(f"{where} failed with exit code {proc.returncode}; its stderr ends:\n{_tail(err)}",
                             fix="run the command by hand on the aligned photo and fix what it reports")
        fix = ("the command must write its views and an opencv_cameras.json listing them ({'frames': [{w, h, fx, "
               "fy, cx, cy, w2c, file_path}]}) into {output}")
        if not (output / "opencv_cameras.json").is_file():
            listed = sorted(p.name for p in output.iterdir())[:10]
            raise InputError(f"{where} succeeded but wrote no opencv_cameras.json into {{output}} (it holds: "
                             f"{', '.join(listed) or 'nothing'})", path=output, fix=fix)
        try:
            read = read_capture(output / "opencv_cameras.json", format=CaptureFormat.OPENCV_JSON, test_every=0)
            rgba = check_views(read, min_views=self.config.min_views, where=where, fix=fix)
        except InputError:
            raise
        except HeadforgeError as e:  # camera / capture errors: say which command wrote the bad output
            raise InputError(f"{where} wrote a bad capture: {e.problem}", path=e.path, fix=e.fix or fix) from None
        centre = _head_centre(head)
        check_frame(read.native_cameras, centre, where=where, path=output / "opencv_cameras.json")
        return generated_capture(read.native_cameras.to(dtype=torch.float32), rgba)


def _head_centre(head: Avatar | None) -> Tensor:  # [3] world
    """The head centre in the photo's world: the rig frame's origin through the fit's similarity (the world
    origin, the head frame's centre, without a head)."""
    if head is None:
        return torch.zeros(3, dtype=torch.float64)
    return head.params.similarity.translation.double().reshape(3)
