"""`python -m champ_core convert-smpl SRC DST`: an official SMPL model file to a clean npz.

The official `.pkl` files hold chumpy arrays and a scipy sparse matrix; they are read with the
project's restricted unpickler (no chumpy, no code execution) and written as a plain npz with the
same key names (v_template, shapedirs, posedirs, J_regressor (dense), weights, kintree_table, f).
"""

from __future__ import annotations

HELP = "convert an SMPL model (.pkl with chumpy arrays, or .npz) into a clean npz (no pickles)"


def add_arguments(parser) -> None:
    parser.add_argument("src", help="SMPL model file (e.g. SMPL_NEUTRAL.pkl) or the folder holding it")
    parser.add_argument("dst", help="output .npz path")
    parser.add_argument("--gender", default="neutral", choices=("neutral", "male", "female"),
                        help="which model to pick when SRC is a folder")


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from ..atomic import atomic_file
    from ..body.model import BodyModelError, find_model_file, read_smpl_arrays
    from ..body.safe_pickle import UnsafePickleError
    from . import CommandError
    from .errors import check_output_file

    src, dst = Path(args.src), Path(args.dst)
    check_output_file(dst, "DST", (".npz",))  # before reading a large model file
    try:
        if src.is_dir():
            src = find_model_file(src, args.gender)
        if src.resolve() == dst.resolve():
            raise CommandError(f"DST {dst}: is the source file itself; give another output name")
        arrays = read_smpl_arrays(src)  # validates shapes, NaN/inf, face and joint indices
    except (BodyModelError, UnsafePickleError) as exc:
        raise CommandError(str(exc)) from exc
    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    clean["f"] = clean["f"].astype(np.uint32)
    clean["kintree_table"] = clean["kintree_table"].astype(np.int64)
    with atomic_file(dst) as tmp:  # a temporary name next to DST, renamed when complete
        np.savez_compressed(tmp, **clean)
    v = clean["v_template"]
    print(f"wrote {dst}: {v.shape[0]} vertices, {clean['f'].shape[0]} faces, "
          f"{clean['shapedirs'].shape[2]} shape directions")
    return 0
