"""Generate the MediaPipe-478 embedding of ICT-FaceKit shipped as headforge/representations/rig/data/*.npz.

    python tools/generate_landmark_embedding.py --rig ict-facekit:PATH \\
        --out headforge/representations/rig/data/ict_facekit_mediapipe478.npz

Renders the kit's neutral from a frontal cone of views, detects with MediaPipe, triangulates and snaps the points
onto the face/eye surface (``headforge.stages.landmark_embedding``). Needs ``headforge[face]`` (mediapipe) and
the kit. Writes triangles int32 [478], barycentrics float32 [478, 3], the per-landmark report (``points``
triangulated in the head frame in metres, ``reliable``, ``error_px``, ``surface_mm``, ``num_inliers``), the
topology the embedding belongs to (``num_vertices``, ``num_faces``, ``topology_sha256``) and a JSON ``metadata``
string (the command, versions, date, config, summary numbers, attribution).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from headforge.errors import HeadforgeError, InputError
from headforge.representations.rig.ict_facekit import LICENCE, topology_sha256
from headforge.representations.rig.sources import RigSource, load_rig, parse_rig_spec
from headforge.stages.face_landmarks import MEDIAPIPE_VERSION
from headforge.stages.landmark_embedding import EmbedConfig, embed_mediapipe

ATTRIBUTION = ("Derived from ICT-FaceKit (https://github.com/ICT-VGL/ICT-FaceKit), Copyright (c) 2020 USC Institute "
               "for Creative Technologies, released under the MIT licence (the kit's LICENSE file): triangle "
               "indices and barycentrics on its generic neutral mesh, computed by headforge by running MediaPipe "
               "Face Mesh on renders of that mesh. Redistributed under the same MIT licence with this notice.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rig", required=True, help="ict-facekit:FOLDER")
    parser.add_argument("--out", required=True, type=Path, help="the .npz to write")
    parser.add_argument("--size", type=int, default=EmbedConfig.size, help="render size in pixels")
    args = parser.parse_args(argv)
    spec = parse_rig_spec(args.rig)
    if spec.source is not RigSource.ICT_FACEKIT:
        raise InputError(f"only ict-facekit embeddings are generated here (got {spec.source})",
                         fix="pass --rig ict-facekit:FOLDER")
    rig = load_rig(spec)
    cfg = EmbedConfig(size=args.size)
    emb, report = embed_mediapipe(rig, cfg)
    import mediapipe

    faces = rig.faces.numpy()
    summary = report.summary()
    meta = {"command": shlex.join(["python", "tools/generate_landmark_embedding.py", *(argv or sys.argv[1:])]),
            "mediapipe_version": mediapipe.__version__, "expected_mediapipe_version": MEDIAPIPE_VERSION,
            "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "config": {"size": cfg.size, "yaws": cfg.yaws, "pitches": cfg.pitches, "threshold_px": cfg.threshold_px,
                       "min_inliers": cfg.min_inliers, "max_surface_mm": cfg.max_surface_mm},
            "ict_num_vertices": rig.num_vertices, "ict_num_faces": len(faces), "summary": summary,
            "attribution": ATTRIBUTION, "source_licence": LICENCE}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, triangles=emb.triangles.numpy().astype(np.int32),
                        barycentrics=emb.barycentrics.numpy().astype(np.float32),
                        points=report.points.numpy().astype(np.float32), reliable=report.reliable.numpy(),
                        error_px=report.error_px.numpy().astype(np.float32),
                        surface_mm=report.surface_mm.numpy().astype(np.float32),
                        num_inliers=report.num_inliers.numpy().astype(np.int32),
                        num_vertices=np.int64(rig.num_vertices), num_faces=np.int64(len(faces)),
                        topology_sha256=np.str_(topology_sha256(faces)), metadata=np.str_(json.dumps(meta)))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HeadforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
