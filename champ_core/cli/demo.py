"""`python -m champ_core demo`: the pack's own model animating a generated person, offline on a CPU.

Default: a generated character the built-in model never saw (a held-out `synth-data` seed) follows
a built-in motion. The demo renders its guidance maps, animates its first frame with the built-in
model (models/champ/builtin) and writes OUT/animation.mp4, OUT/side_by_side.mp4 (reference |
guidance | animation), OUT/reference.png, OUT/guidance/ and OUT/strip.jpg (the reference and six
frames, guidance above animation; the README's picture).

`--photo`: the guidance-only transfer onto a real photograph (scikit-image's public-domain
`astronaut` with hand-placed keypoints): fit the person, align the motion, render the maps. The
built-in model is not used there, because real photographs are outside its domain.
"""

from __future__ import annotations

HELP = ("offline demo: the built-in model animates a generated person along a built-in motion (--photo: guidance "
        "for a real photograph)")

# The demo's character: a held-out synth-data seed (the quality bench uses HELD_OUT_SEED itself).
DEMO_SEED_OFFSET = 7
DEMO_FRAMES = 48


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default: ./out/demo)")
    parser.add_argument("--motion", default="dance", help="built-in motion (walk, wave, turn, dance, idle); with "
                        "--photo also a motion file")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"length of the motion (default: {DEMO_FRAMES} frames; with --photo 3 s)")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the built-in model's)")
    parser.add_argument("--character", type=int, default=0, help="which held-out generated character (default 0)")
    parser.add_argument("--photo", action="store_true", help="guidance-only transfer onto the bundled photograph")
    parser.add_argument("--root-motion", default="follow", choices=("follow", "pin"))
    parser.add_argument("--orientation", default="motion", choices=("motion", "reference"))
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "pyrender"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder (default: yes "
                        "for the default ./out/demo)")  # fmt: skip


def run(args) -> int:
    return _run_photo(args) if args.photo else _run_builtin(args)


def _run_builtin(args) -> int:
    import time

    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from ..atomic import atomic_dir
    from ..body.motions import BUILTIN_MOTIONS
    from ..evaluation.quality import HELD_OUT_SEED
    from ..guidance import GUIDANCE_TYPES
    from ..models.builtin import BuiltinSampling, builtin_model_dir, builtin_size
    from ..models.errors import CheckpointError
    from ..pipeline.inputs import ArrayGuidance
    from ..pipeline.loading import load_pipeline
    from ..pipeline.sampling import SamplingOptions, to_uint8
    from ..pipeline.windows import WindowOptions
    from ..render.writer import MotionFolderError, write_motion_folder
    from ..train.people import generate_video
    from ..train.synth import SynthOptions
    from ..video import VideoWriter
    from . import CommandError
    from .errors import check_output_dir, check_positive

    start = time.time()
    out = check_output_dir(args.out, "--out", overwrite=args.overwrite or args.out == "out/demo")
    check_positive(args.fps, "--fps")
    if args.motion not in BUILTIN_MOTIONS:
        raise CommandError(f"--motion {args.motion}: not a built-in motion ({', '.join(BUILTIN_MOTIONS)}); motion "
                           "files go with --photo or `animate`")
    if args.seconds is not None:
        check_positive(args.seconds, "--seconds")
    frames = DEMO_FRAMES if args.seconds is None else max(2, round(args.seconds * args.fps))
    if frames > 100_000:
        raise CommandError(f"--seconds {args.seconds} at --fps {args.fps}: more than 100000 frames; give a shorter motion")
    steps = BuiltinSampling.steps if args.steps is None else args.steps
    check_positive(steps, "--steps", integer=True)
    if args.character < 0:
        raise CommandError(f"--character {args.character}: must be 0 or more")
    try:
        weights = builtin_model_dir()
        size = builtin_size(weights)[0]
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None

    print(f"1/4 generating a held-out character doing '{args.motion}' ({frames} frames at {size}x{size}) ...")
    options = SynthOptions(videos=1, frames=frames, size=size, seed=HELD_OUT_SEED + DEMO_SEED_OFFSET,
                           motions="builtin", fps=args.fps, builtin_motion=args.motion)
    video = generate_video(options, args.character)
    reference = video.images[0]
    guidance = ArrayGuidance({t: video.layers[t] for t in GUIDANCE_TYPES}, mask=video.layers["mask"])
    print("2/4 loading the built-in model ...")
    pipeline = load_pipeline(weights, dtype=torch.float32, device="cpu")
    sampling = SamplingOptions(steps=steps, guidance_scale=BuiltinSampling.guidance_scale, seed=BuiltinSampling.seed,
                               solver=BuiltinSampling.solver, beta_schedule=BuiltinSampling.beta_schedule,
                               windows=WindowOptions(length=min(BuiltinSampling.window_length, frames),
                                                     overlap=BuiltinSampling.window_overlap if frames >
                                                     BuiltinSampling.window_length else 0))
    print(f"3/4 animating ({steps} steps, CFG {BuiltinSampling.guidance_scale}) ...")
    bars: dict = {}

    def progress(event) -> None:
        bar = bars.get(event.phase)
        if bar is None:  # one bar per phase (reference, denoise, decode), the previous one closed
            for other in bars.values():
                other.close()
            bar = bars[event.phase] = tqdm(total=event.total, desc=event.phase, dynamic_ncols=True)
        bar.update(event.done - bar.n)

    try:
        encoded = pipeline.encode_reference(reference, size, size, "squash")
        latents = pipeline.denoise(encoded, guidance, size, size, sampling, "squash", progress=progress)
        animation = np.concatenate([to_uint8(chunk) for _, chunk in pipeline.decode(latents, 8, None, progress)])
    finally:
        for bar in bars.values():
            bar.close()
    print("4/4 writing the videos, the reference and the guidance maps ...")
    with atomic_dir(out, overwrite=True) as staging:
        try:
            write_motion_folder(staging / "guidance", video.layers, fps=args.fps, reference=reference, previews=True,
                                overwrite=True)
        except MotionFolderError as exc:
            raise CommandError(str(exc)) from exc
        Image.fromarray(reference).save(staging / "reference.png")
        video.motion.save(staging / "motion.npz")
        with VideoWriter(staging / "animation.mp4", args.fps) as writer:
            writer.write(animation)
        tiles = [np.repeat(reference[None], len(animation), 0), video.layers["semantic_map"], animation]
        with VideoWriter(staging / "side_by_side.mp4", args.fps) as writer:
            writer.write(np.concatenate(tiles, axis=2))
        Image.fromarray(frame_strip(reference, video.layers["semantic_map"], animation)).save(
            staging / "strip.jpg", quality=90)
    print(f"\nwrote {out / 'animation.mp4'} ({len(animation)} frames at {size}x{size}), {out / 'side_by_side.mp4'} "
          f"(reference | guidance | animation), {out / 'reference.png'} and {out / 'guidance'}/ "
          f"in {time.time() - start:.1f} s")
    print("The built-in model is trained on generated mannequins only; for real photographs use the released Champ "
          "weights (see README) with `python -m champ_core animate --weights ...`.")
    return 0


def frame_strip(reference, guidance, animation, columns: int = 6):
    """One picture of a run: the reference, then `columns` evenly spaced frames, guidance above animation."""
    import numpy as np

    picks = np.linspace(0, len(animation) - 1, min(columns, len(animation))).round().astype(int)
    blank = np.full_like(reference, 255)
    top = np.concatenate([blank] + [guidance[i] for i in picks], axis=1)
    bottom = np.concatenate([reference] + [animation[i] for i in picks], axis=1)
    return np.concatenate([top, bottom], axis=0)


def _run_photo(args) -> int:
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
    args.seconds = 3.0 if args.seconds is None else args.seconds
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
