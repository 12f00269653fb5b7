"""The SLURM launcher's cost on the local single-node cluster: a small frozen sweep (2 triples x 2
seeds, the tests' tiny data) through --launcher local and --launcher slurm, and the overhead of
one job: a job array of no-op submitit tasks, from sbatch to the last result.

    python -m benchmarks.slurm_sweep [--tasks 8] [--epochs 3]

Starts the cluster with tools/local_slurm.sh (root and apt needed) unless SLURM_CONF names one,
and stops what it started.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--arch", "resnet18", "--no-pretrained", "--image-size", "32", "--batch-size", "16",
        "--embed-dim", "32", "--gru-hidden", "64", "--workers", "0"]


def script(*args) -> float:
    start = time.time()
    subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.time() - start


def noop() -> int:
    return 0


def array_overhead(folder: Path, tasks: int) -> float:
    """Seconds per task of an array of no-op tasks run one at a time (--max-parallel 1)."""
    import submitit
    executor = submitit.SlurmExecutor(folder=folder / "%j")
    executor.update_parameters(time=30, cpus_per_task=1, array_parallelism=1,
                               setup=[f"export PYTHONPATH={ROOT}"])
    start = time.time()
    with executor.batch():
        jobs = [executor.submit(noop) for _ in range(tasks)]
    while not all(j.paths.result_pickle.exists() for j in jobs):
        time.sleep(0.2)
    return (time.time() - start) / tasks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from demo.synthetic import generate_synthetic

    root = Path(tempfile.mkdtemp(prefix="slurm-bench-"))
    started = None
    if not os.environ.get("SLURM_CONF"):
        started = root / "cluster"
        out = subprocess.run([str(ROOT / "tools" / "local_slurm.sh"), "start", str(started)],
                             capture_output=True, text=True, check=True).stdout
        os.environ["SLURM_CONF"] = out.strip().splitlines()[-1].split("=", 1)[1]
    try:
        manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=4)
        common = ["--dataset", manifest, "--work-dir", root / "work", "--workers", "1"]
        script(ROOT / "train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20")
        script(ROOT / "extract_doc2vec_vectors.py", *common)
        script(ROOT / "knn_document_features.py", *common, "--k", "20")
        script(ROOT / "prepare_image_features.py", *common, "--arch", "resnet18",
               "--no-pretrained", "--image-size", "32", "--batch-size", "50")
        trainer = ["--", "--dataset", manifest, "--work-dir", root / "work", *TINY,
                   "--frozen-image", "--epochs", str(args.epochs)]
        sweep = ["--grid", "1 0 0; 1 0.3 0.2", "--seeds", "2", "--bootstrap", "200"]
        local = script(ROOT / "tune_weights.py", *sweep, "--devices", "cpu", "--out",
                       root / "local", *trainer)
        # Both one run at a time with every core, so that the difference is the launcher's.
        slurm = script(ROOT / "tune_weights.py", *sweep, "--launcher", "slurm", "--time", "30",
                       "--cpus-per-run", str(os.cpu_count()), "--out", root / "slurm", *trainer)
        per_task = array_overhead(root / "noop", args.tasks)
        print(f"frozen sweep, 2 triples x 2 seeds, {args.epochs} epochs (4 runs validated, 4 "
              f"tested): local launcher {local:.0f} s, SLURM {slurm:.0f} s")
        print(f"a no-op array task, one at a time, sbatch to result: {per_task:.1f} s")
    finally:
        if started is not None:
            subprocess.run([str(ROOT / "tools" / "local_slurm.sh"), "stop", str(started)])
        subprocess.run(["rm", "-rf", str(root)])


if __name__ == "__main__":
    main()
