"""`python -m champ_core demo`: guidance for a built-in motion, transferred onto a bundled photograph.

Runs offline in seconds on a CPU: the open body, a built-in motion, scikit-image's public-domain
`astronaut` portrait with hand-placed keypoints shipped in the package. It fits the reference
person (pose, camera, proportions), aligns the motion to them, renders the guidance maps and writes
a motion folder with an mp4 preview and an overlay on the photograph.
"""

from __future__ import annotations

HELP = "offline demo: fit the bundled reference photo, transfer a built-in motion, render guidance + previews"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default: ./out/demo)")
    parser.add_argument("--motion", default="dance", help="built-in motion (walk, wave, turn, dance, idle) or a motion file")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a built-in motion (default 3 s)")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--root-motion", default="follow", choices=("follow", "pin"))
    parser.add_argument("--orientation", default="motion", choices=("motion", "reference"))
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "pyrender"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder (default: yes "
                        "for the default ./out/demo)")  # fmt: skip


def run(args) -> int:
    import time
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from ..atomic import atomic_dir
    from ..body.alignment import AlignOptions, align_to_reference
    from ..body.fitting import fit_reference
    from ..body.keypoints import load_pose_keypoints, skeleton_keypoints
    from ..body.model import open_body_model
    from ..body.motions import BUILTIN_MOTIONS, MotionSourceError
    from ..body.sources import builtin_or_file
    from ..render import draw_skeleton, render_guidance
    from ..render.writer import MotionFolderError, write_motion_folder
    from . import CommandError
    from .errors import check_output_dir, check_positive

    start = time.time()
    overwrite = args.overwrite or args.out == "out/demo"
    out = check_output_dir(args.out, "--out", overwrite=overwrite)
    check_positive(args.fps, "--fps")
    check_positive(args.seconds, "--seconds")
    if args.seconds * args.fps > 100_000:
        raise CommandError(f"--seconds {args.seconds} at --fps {args.fps}: more than 100000 frames; give a shorter motion")
    if args.motion not in BUILTIN_MOTIONS and not Path(args.motion).exists():
        raise CommandError(f"--motion {args.motion}: neither a built-in motion ({', '.join(BUILTIN_MOTIONS)}) nor an "
                           "existing motion file or folder")
    try:
        import skimage.data
    except ImportError as exc:
        raise CommandError("the demo's reference photograph comes from scikit-image: pip install scikit-image") from exc
    reference_image = skimage.data.astronaut()
    body = open_body_model()
    keypoints = load_pose_keypoints(Path(__file__).resolve().parents[1] / "body" / "data" / "astronaut_keypoints.json")

    print("1/4 fitting the reference person (astronaut, waist-up) ...")
    reference = fit_reference(keypoints, body)
    print("2/4 loading motion and aligning it to the reference ...")
    try:
        motion = builtin_or_file(args.motion, body, fps=args.fps, seconds=args.seconds)
    except MotionSourceError as exc:
        raise CommandError(str(exc)) from exc
    aligned = align_to_reference(motion, reference, body, AlignOptions(args.root_motion, args.orientation))
    posed = aligned.pose(body)
    print(f"3/4 rendering {aligned.num_frames} frames at {aligned.camera.width}x{aligned.camera.height} ...")
    with tqdm(total=aligned.num_frames, desc="render", unit="frame") as bar:
        layers = render_guidance(posed.vertices, body.faces, body.part_labels, aligned.camera, backend=args.backend,
                                 progress=lambda done, total: bar.update(done - bar.n))
    skeleton = skeleton_keypoints(posed.vertices, posed.joints, aligned.camera)
    layers["dwpose"] = draw_skeleton(skeleton, aligned.camera.width, aligned.camera.height)
    print("4/4 writing the motion folder and previews ...")
    from PIL import Image

    # everything goes into a temporary sibling folder that replaces OUT only when complete
    with atomic_dir(out, overwrite=True) as staging:
        try:
            write_motion_folder(staging / "guidance", layers, aligned.frame_names, fps=aligned.fps,
                                reference=reference_image, previews=True, overwrite=True)
        except MotionFolderError as exc:
            raise CommandError(str(exc)) from exc
        Image.fromarray(reference_image).save(staging / "reference.png")
        aligned.save(staging / "motion_aligned.npz")
        reference.save(staging / "reference_fit.npz")
        np.savez(staging / "reference_betas.npz", betas=reference.betas)
    folder = out / "guidance"
    print(f"\nwrote {folder} ({aligned.num_frames} frames: depth/ normal/ semantic_map/ dwpose/ mask/, preview.mp4, "
          f"overlay.mp4), {out / 'reference.png'} and the SMPL motion {out / 'motion_aligned.npz'} "
          f"in {time.time() - start:.1f} s")
    print(
        "\nTo animate the reference with Champ, put the released Champ weights (denoising_unet.pth, reference_unet.pth,\n"
        "guidance_encoder_*.pth, motion_module.pth), the SD 1.5 VAE and the CLIP image encoder in your model folders\n"
        "(see README), then run:\n"
        f"  python -m champ_core animate --reference {out / 'reference.png'} --guidance {folder} "
        f"--weights YOUR_CHAMP_FOLDER --out {out / 'animation.mp4'}\n"
        "Real SMPL bodies: put SMPL_NEUTRAL.pkl in a folder of yours and pass it to the render/fit commands (--body)."
    )
    return 0
