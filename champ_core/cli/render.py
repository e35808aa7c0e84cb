"""`python -m champ_core render`: a motion (SMPL parameters + camera) to a guidance motion folder."""

from __future__ import annotations

# frames rendered, drawn and written per step (bounds memory: ~3.5 MB per 512x512 frame)
CHUNK_FRAMES = 64

HELP = "render depth/normal/semantic/skeleton/mask guidance for a motion into a motion folder (+ previews)"


def add_arguments(parser) -> None:
    parser.add_argument("--motion", required=True, help="motion .npz (SMPL parameters + camera, champ-motion/1)")
    parser.add_argument("--out", required=True, help="output motion folder (depth/ normal/ semantic_map/ dwpose/ mask/)")
    parser.add_argument(
        "--body", default="open", help="SMPL model file or folder (SMPL_NEUTRAL.pkl ...); default: the open body"
    )
    parser.add_argument("--gender", default="neutral", choices=("neutral", "male", "female"))
    parser.add_argument("--reference", help="reference image for the overlay preview")
    parser.add_argument("--keypoints", help="POSE_KEYPOINT / OpenPose JSON to draw the skeleton from "
                        "(default: the body's projected joints)")  # fmt: skip
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "pyrender"))
    parser.add_argument("--device", default=None, help="torch device for the torch back end (cpu, cuda)")
    parser.add_argument("--no-previews", action="store_true", help="skip preview.mp4 and overlay.mp4")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args) -> int:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from ..body.keypoints import KeypointError, load_pose_keypoints, skeleton_keypoints
    from ..body.model import BodyModelError, load_body_model, open_body_model
    from ..body.motion import Motion, MotionError
    from ..pipeline.inputs import InputError, to_rgb_uint8
    from ..render import (
        RenderBackendError,
        RenderInputError,
        SkeletonInputError,
        draw_skeleton,
        iter_guidance,
    )
    from ..render.writer import MotionFolderError, MotionFolderWriter
    from . import CommandError
    from .errors import check_device, check_input_file, check_output_dir

    # cheap checks first: paths, the device, the reference image
    check_input_file(args.motion, "--motion", "motion file", suffixes=(".npz",))
    out = check_output_dir(args.out, "--out", overwrite=args.overwrite)
    if args.keypoints:
        if not Path(args.keypoints).is_dir():
            check_input_file(args.keypoints, "--keypoints", "keypoint file")
    if args.body != "open" and not Path(args.body).exists():
        raise CommandError(f"--body {args.body}: no such SMPL model file or folder; give SMPL_NEUTRAL.pkl / .npz "
                           "(or its folder), or leave --body out for the open body")
    if args.device is not None:
        check_device(args.device)
    reference = None
    if args.reference:
        check_input_file(args.reference, "--reference", "reference image")
        try:
            reference = to_rgb_uint8(args.reference)  # 16-bit, gray, RGBA handled as for animate
        except InputError as exc:
            raise CommandError(f"--reference {args.reference}: {exc}; give a PNG or JPEG image") from exc
    try:
        motion = Motion.load(args.motion)
        body = open_body_model() if args.body == "open" else load_body_model(args.body, gender=args.gender)
    except (MotionError, BodyModelError) as exc:
        raise CommandError(str(exc)) from exc

    camera = motion.camera
    posed = motion.pose(body)
    # Skeleton keypoints for all frames first (small), so bad keypoint files fail before rendering.
    try:
        if args.keypoints:
            pose = load_pose_keypoints(args.keypoints)
            if pose.num_frames != motion.num_frames:
                raise CommandError(f"{args.keypoints} has {pose.num_frames} frames but the motion has {motion.num_frames}")
            scale = np.array([camera.width / pose.width, camera.height / pose.height, 1.0])
            skeleton = {
                "body": pose.body * scale,
                "hands": None if pose.hands is None else pose.hands * scale,
                "face": None if pose.face is None else pose.face * scale,
            }
        else:
            skeleton = {"body": skeleton_keypoints(posed.vertices, posed.joints, camera), "hands": None, "face": None}
    except KeypointError as exc:
        raise CommandError(str(exc)) from exc

    # Render, draw and write chunk by chunk: memory stays bounded for long motions.
    names = motion.frame_names
    try:
        with (
            MotionFolderWriter(out, fps=motion.fps, reference=reference, previews=not args.no_previews,
                               overwrite=args.overwrite) as writer,
            tqdm(total=motion.num_frames, desc="render", unit="frame") as bar,
        ):  # fmt: skip
            for start, stop, layers in iter_guidance(
                posed.vertices, body.faces, body.part_labels, camera, backend=args.backend, device=args.device,
                chunk_frames=CHUNK_FRAMES,
            ):  # fmt: skip
                part = {k: None if v is None else v[start:stop] for k, v in skeleton.items()}
                layers["dwpose"] = draw_skeleton(part["body"], camera.width, camera.height, hands=part["hands"],
                                                 face=part["face"])  # fmt: skip
                writer.write(layers, names[start:stop])
                bar.update(stop - start)
    except (RenderInputError, RenderBackendError, SkeletonInputError, MotionFolderError) as exc:
        raise CommandError(str(exc)) from exc
    print(f"wrote {motion.num_frames} frames of guidance to {out}")
    return 0
