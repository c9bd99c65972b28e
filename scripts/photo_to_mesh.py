"""One face photo -> textured 3D mesh (OBJ + MTL + PNG, PLY), a re-render grid and metrics.

    python scripts/photo_to_mesh.py --image ../shared/assets/faces/ffhq_00009.png \
        --out outputs/ffhq_00009 --uv-size 1024

Detects the face (FaceBoxes), regresses 68 landmarks (3DDFA_V2), fits a morphable model to them,
fuses the photo into a UV texture (visibility, view weights, mirror filling, inpainting), writes the
files into --out (replacing an earlier run's folder there; any other non-empty folder is refused) and
prints the re-render PSNR/SSIM inside the face-skin mask (``rerender_scored_in`` says which; over every pixel the
mesh covers: ``covered_psnr``/``covered_ssim``). With several faces in the photo, the most confident
is used and a ``note:`` line (and ``faces`` in metrics.json) says which, with its box and score. A photo
larger than --max-side (2048 px by default) is scaled down to it as it is decoded. Bad input (unreadable
photo or one too large to decode safely, no face, an --out it cannot write or without room for the files,
before any computation) ends in one ``error:`` line and exit code 2, as with ``main.py``; Ctrl-C stops it
within a second, writes nothing and exits with 130. The job itself is ``app.photo_to_mesh``; this file is its
command line.

It also copies the photo (photo.jpg) and rebuilds the HTML gallery of the folder holding --out
(``facetex.gallery``): run it on several photos with ``--out outputs/NAME`` and
``outputs/index.html`` lists them all, each with a 3D viewer; it opens straight from disk.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.photo_to_mesh import DEFAULT_YAWS, add_to_gallery, photo_to_mesh  # noqa: E402
from facetex.face3d.image_io import WORKING_SIDE  # noqa: E402
from facetex.face3d.pipeline import AssetPaths  # noqa: E402
from facetex.face3d.rasterizer import active_backend  # noqa: E402
from facetex.face3d.texture import MAX_TEXTURE_SIZE, MIN_TEXTURE_SIZE  # noqa: E402
from facetex.gallery import GalleryError  # noqa: E402
from foundation.errors import InputError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, type=Path,
                        help="photo with a face (PNG, JPEG, ...); with several, the most confident one is used")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--uv-size", type=int, default=1024, help="texture side in texels, 256..2048")
    parser.add_argument("--model", choices=("sfm", "bfm"), default="bfm",
                        help="bfm: 3DDFA_V2's own mesh and pose (the BFM mean face; the default, see docs/face3d.md); "
                             "sfm: Surrey Face Model, shape + expression fitted with the rotation anchored to 3DDFA_V2's")
    parser.add_argument("--yaws", type=float, nargs="+", default=list(DEFAULT_YAWS), help="re-render yaws, degrees")
    parser.add_argument("--assets", type=Path,
                        default=Path(os.environ.get("SHARED_ASSETS", REPO_ROOT.parent / "shared" / "assets")),
                        help="folder laid out like shared/assets (3ddfa_v2/, bfm/, sfm/)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--tensorboard", type=Path, default=None,
                        help="also log the grid, texture, mesh and scores to this TensorBoard log dir")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="face detector score a face must exceed, in [0, 1); lower it when a small, dark or "
                             "turned face is not found (more false detections)")
    parser.add_argument("--max-side", type=int, default=WORKING_SIDE,
                        help="working size: a photo whose longest side is larger is scaled down to this many pixels "
                             "as it is decoded (memory and time follow it); 0 keeps the photo's own size")
    args = parser.parse_args()
    if args.max_side != 0 and args.max_side < 64:
        parser.error(f"--max-side must be 0 (the photo's own size) or at least 64 pixels, got {args.max_side}")
    if not MIN_TEXTURE_SIZE <= args.uv_size <= MAX_TEXTURE_SIZE:
        parser.error(f"--uv-size must be in [{MIN_TEXTURE_SIZE}, {MAX_TEXTURE_SIZE}], got {args.uv_size}")

    print(f"rasteriser backend: {active_backend()}")
    try:
        metrics = photo_to_mesh(args.image, args.out, AssetPaths.from_folder(args.assets), args.model,
                                args.uv_size, args.yaws, device=args.device, tensorboard_dir=args.tensorboard,
                                score_threshold=args.score_threshold, max_side=args.max_side or None)
    except (InputError, FileNotFoundError, IsADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: nothing written to {args.out.absolute()}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # now: the job's worker may still be inside a long native call (app.cancellable)
    if metrics["faces"]["note"]:
        print(f"note: {args.image}: {metrics['faces']['note']}")
    print(json.dumps({key: metrics[key] for key in ("rerender", "rerender_scored_in", "pose_degrees", "landmark_rmse_px", "texel_sources",
                                                 "faces")},
                     indent=2))
    print(f"wrote {args.out.absolute()}/face.obj (+ .mtl, .png), face.ply, grid.png, metrics.json")
    try:  # the mesh is done: a gallery that cannot be built (e.g. a broken sibling folder) is a warning
        gallery = add_to_gallery(args.image, args.out)
    except (GalleryError, OSError) as error:
        print(f"warning: no gallery written: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: the face folder is written, its gallery was not rebuilt", file=sys.stderr)
        return 130
    else:
        print(f"gallery: {gallery.as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
