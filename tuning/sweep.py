"""The runs of a sweep: their folders and commands, what counts as finished, and running them
over a set of devices, one run per device at a time.

Each run is the real scripts as subprocesses: train_cross_modal_retrieval_model.py with the
sweep's trainer flags, evaluating its best.pt on the validation split in the same process
(--then-evaluate; evaluate_retrieval.py on its own when the run was trained already), and later,
for the chosen weights and the baseline, evaluate_retrieval.py on test (one process per device,
evaluate_together). Subprocesses because the scripts are the interface a user runs by hand, a run's device is then set by its environment (CUDA_VISIBLE_DEVICES), several
devices train at once without sharing one interpreter, and a crash or out-of-memory in one run
leaves the others and the sweep itself standing.

Finished means a marker file written atomically AFTER the evaluation's metrics: done_val.json or
done_test.json holding the run's key (its trainer command without the device, and the
evaluation's settings) and the metrics. A run whose marker is missing, or holds another key
(the flags changed), is run again: not trained again when started.json says the trainer
finished it with the same key (only the evaluation's settings changed), continued from its last.pt
(--resume) when the trainer started it with the same key, from scratch otherwise.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from common import signals
from common.files import read_regular_text
from common.records import read_json
from common.workdir import atomic_write
from evaluation.names import run_names
from losses.weights import Weights, exact_number
from tuning.grid import Triple, format_triple

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "train_cross_modal_retrieval_model.py"
EVALUATOR = ROOT / "evaluate_retrieval.py"
NO_FLAG = "default"   # the objective's name when the trainer has no --negatives flag


@dataclass(frozen=True)
class Device:
    name: str                                    # "cpu", "cuda:1" (or anything, in tests)
    flag: str = "cpu"                            # the scripts' --device
    env: tuple[tuple[str, str], ...] = ()        # added to the run's environment


def parse_devices(text: str, cuda_count: int, cpu_count: int) -> list[Device]:
    """'cpu', 'cuda', 'cuda:0,cuda:1', 'cpu,cpu' or 'auto' (every CUDA device, else the CPU)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["auto"]:
        names = [f"cuda:{i}" for i in range(cuda_count)] or ["cpu"]
    if not names:
        raise ValueError("--devices is empty: give e.g. cpu, cuda:0 or cuda:0,cuda:1")
    n_cpu = names.count("cpu")
    devices = []
    for name in names:
        if name == "cpu":
            # Several CPU runs at once share the cores instead of each taking all of them.
            threads = max(1, cpu_count // n_cpu)
            devices.append(Device("cpu", "cpu", (("OMP_NUM_THREADS", str(threads)),) if n_cpu > 1 else ()))
            continue
        index = name[5:] if name.startswith("cuda:") else "0" if name == "cuda" else None
        if index is None or not index.isdigit():
            raise ValueError(f"--devices: {name!r} is not a device: give cpu, cuda or cuda:N")
        if int(index) >= cuda_count:
            raise ValueError(f"--devices: {name} is not there ({cuda_count} CUDA devices visible)")
        devices.append(Device(f"cuda:{index}", "cuda", (("CUDA_VISIBLE_DEVICES", index),)))
    if len({d.name for d in devices if d.flag == "cuda"}) < sum(d.flag == "cuda" for d in devices):
        raise ValueError("--devices lists a GPU twice: one run per device at a time")
    return devices


@dataclass(frozen=True)
class Run:
    objective: str
    weights: Triple
    seed: int
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.objective} {format_triple(self.weights)} seed {self.seed}"


def plan(out: Path, objectives: Sequence[str], triples: Sequence[Triple], seeds: int) -> list[Run]:
    """Every run, seed by seed (so that a sweep stopped early has every triple at equal seeds)."""
    return [Run(obj, w, s, out / obj / Weights(*w).run_name() / f"seed_{s}")
            for s in range(seeds) for obj in objectives for w in triples]


@dataclass
class Settings:
    trainer_args: list[str]          # the trainer's own flags, passed through
    negatives: bool                  # the trainer takes --negatives (the objective)
    ties: str = "stable"             # evaluate_retrieval.py --ties
    eval_workers: int | None = None  # evaluate_retrieval.py --workers
    keep_last: bool = False          # keep last.pt after the run's validation marker
    python: str = sys.executable
    # Read when the settings are made, not when a command is: a SLURM job runs a pickled copy.
    trainer: Path = field(default_factory=lambda: TRAINER)
    evaluator: Path = field(default_factory=lambda: EVALUATOR)

    def train_command(self, run: Run) -> list[str]:
        objective = ["--negatives", run.objective] if self.negatives else []
        return [str(self.trainer), *map(format_weight, run.weights), *self.trainer_args, *objective,
                "--run-seed", str(run.seed), "--log-dir", str(run.folder)]

    def eval_flags(self, run: Run, split: str) -> list[str]:
        """evaluate_retrieval.py's flags but --checkpoint (run.folder/best.pt) and --device."""
        extra = ["--save-ranks"] if split == "test" else []
        workers = [] if self.eval_workers is None else ["--workers", str(self.eval_workers)]
        return ["--split", split, "--out", str(run.folder / f"metrics_{split}.json"),
                "--ties", self.ties, *workers, *extra]

    def eval_command(self, run: Run, split: str) -> list[str]:
        return [str(self.evaluator), "--checkpoint", str(run.folder / "best.pt"),
                *self.eval_flags(run, split)]

    def train_key(self, run: Run) -> dict:
        """What decides the trained model (not where it is, nor the device)."""
        return {"weights": list(run.weights), "objective": run.objective, "seed": run.seed,
                "trainer_args": self.trainer_args}

    def key(self, run: Run, split: str) -> dict:
        return {**self.train_key(run), "split": split, "ties": self.ties}


def format_weight(w: float) -> str:
    return exact_number(w)   # the trainer must train the weight the folder is named after


def marker(run: Run, split: str) -> Path:
    return run.folder / f"done_{split}.json"


def finished(run: Run, split: str, settings: Settings) -> dict | None:
    """The run's metrics on `split` when its marker is there with this sweep's key, else None."""
    try:
        done = json.loads(read_regular_text(marker(run, split)))
    except (OSError, ValueError):
        return None
    needed = [run.folder / "best.pt"] + ([run.folder / "per_query_test.npz"] if split == "test" else [])
    if done.get("key") != settings.key(run, split) or not all(p.is_file() for p in needed):
        return None
    return done.get("metrics")


def write_text_atomic(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(obj: dict, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=1) + "\n", path)


@dataclass
class Outcome:
    status: str              # "reused", "done" or "failed"
    seconds: float = 0.0
    metrics: dict | None = None
    error: str = ""          # for "failed": the log file and its last line
    code: int = 0            # for "failed": the script's exit status (negative: its signal)


def run_script(cmd: list[str], settings: Settings, device: Device, log: Path) -> tuple[int, str]:
    """Run one script with the device's flag and environment, its output to `log`: its exit
    status, and "" when it succeeded, else the log's path and last line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(device.env)}
    cmd = [settings.python, *cmd, "--device", device.flag]
    with open(log, "a", encoding="utf-8") as f:   # a continued run keeps its earlier part
        f.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} on {device.name}: {' '.join(cmd)}\n")
        f.flush()
        code = signals.run_child(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if code == 0:
        return 0, ""
    lines = [line for line in read_regular_text(log, errors="replace").replace("\r", "\n").splitlines()
             if line.strip()]
    return code, f"exit {code}, see {log}: {lines[-1].strip() if lines else '(no output)'}"


def start_flag(run: Run, settings: Settings) -> str | None:
    """How the trainer must start this run: None when it was trained with these settings
    already, "--resume" when it was started with them and left a last.pt, else "--overwrite".
    Only reads the folder, so every rank of a distributed run comes to the same answer."""
    try:
        record = json.loads(read_regular_text(run.folder / "started.json"))
    except (OSError, ValueError):
        record = {}
    same = isinstance(record, dict) and record.get("key") == settings.train_key(run)
    if same and record.get("trained") and (run.folder / "best.pt").is_file():
        return None    # only the evaluation's settings changed (and its last.pt may be gone)
    return "--resume" if same and (run.folder / "last.pt").is_file() else "--overwrite"


def train(run: Run, device: Device, settings: Settings, then: str | None = None
          ) -> tuple[int, str, bool]:
    """Train the run unless it was trained with these settings already: the trainer's exit
    status, "" when the run is trained (else the error), and whether the trainer also evaluated
    it on `then` (its --then-evaluate: one process start fewer than evaluating on its own)."""
    flag = start_flag(run, settings)
    if flag is None:
        return 0, "", False
    for s in ("val", "test"):       # whatever was evaluated belongs to the old model
        marker(run, s).unlink(missing_ok=True)
    if flag == "--overwrite":
        # A fresh start: checkpoints of other settings must not be resumed or evaluated
        # should this run stop before it writes its own; --overwrite clears the rest.
        for name in ("last.pt", "best.pt"):
            (run.folder / name).unlink(missing_ok=True)
    key = settings.train_key(run)
    write_json_atomic({"key": key}, run.folder / "started.json")
    evaluate = []
    if then is not None:
        (run.folder / f"metrics_{then}.json").unlink(missing_ok=True)   # another model's
        evaluate = ["--then-evaluate=" + shlex.join(settings.eval_flags(run, then))]
    code, error = run_script(settings.train_command(run) + [flag, *evaluate], settings, device,
                        run.folder / "train.log")
    if not error:
        write_json_atomic({"key": key, "trained": True}, run.folder / "started.json")
    return code, error, bool(evaluate) and not error


def execute(run: Run, split: str, device: Device, settings: Settings) -> Outcome:
    """Train (for "val") and evaluate one run, unless it is finished; then mark it finished."""
    outcome = finished_outcome(run, split, settings)
    if outcome is not None:
        return outcome
    start = time.time()
    run.folder.mkdir(parents=True, exist_ok=True)
    evaluated = False
    if split == "val":
        code, error, evaluated = train(run, device, settings, then=split)
        if error:
            return Outcome("failed", time.time() - start, error=error, code=code)
    out = run.folder / f"metrics_{split}.json"
    if not evaluated:
        code, error = run_script(settings.eval_command(run, split), settings, device,
                                 run.folder / f"evaluate_{split}.log")
        if error:
            return Outcome("failed", time.time() - start, error=error, code=code)
    metrics = read_json(out, f"evaluate_retrieval.py wrote no readable metrics: see {out.parent}")
    mark_finished(run, split, settings, metrics)
    return Outcome("done", time.time() - start, metrics)


def finished_outcome(run: Run, split: str, settings: Settings) -> Outcome | None:
    """"reused" when the run is finished on `split`, "failed" when it must be trained but `split`
    only evaluates (test), else None."""
    metrics = finished(run, split, settings)
    if metrics is not None:
        return Outcome("reused", metrics=metrics)
    if split != "val" and not (run.folder / "best.pt").is_file():
        return Outcome("failed", error=f"{run.folder / 'best.pt'} is missing: train it first")
    return None


def mark_finished(run: Run, split: str, settings: Settings, metrics: dict) -> None:
    """The marker, written atomically once the run's metrics are on disk."""
    write_json_atomic({"key": settings.key(run, split), "metrics": metrics}, marker(run, split))
    if split == "val" and not settings.keep_last:
        # Finished: nothing resumes it any more, and every later evaluation reads best.pt.
        (run.folder / "last.pt").unlink(missing_ok=True)


def evaluate_together(runs: Sequence[Run], split: str, device: Device, settings: Settings
                      ) -> list[Outcome]:
    """Trained runs evaluated on `split` (not "val", which trains) in one evaluate_retrieval.py
    process, one outcome each in their order: the libraries start once, and the split is read
    and its Doc2Vec vectors inferred once (the metrics are those of a process per run). Should
    that process fail, each run is evaluated in a process of its own, so that one broken run
    fails alone."""
    outcomes: list[Outcome | None] = [finished_outcome(run, split, settings) for run in runs]
    todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if len(todo) < 2:
        return [o or execute(run, split, device, settings) for run, o in zip(runs, outcomes)]
    start = time.time()
    first = runs[todo[0]].folder
    log = first / f"evaluate_{split}.log"
    together = first / f"metrics_{split}_together.json"   # {run name: metrics}, then split up
    checkpoints = [str(runs[i].folder / "best.pt") for i in todo]
    flags = settings.eval_flags(runs[todo[0]], split)
    flags[flags.index("--out") + 1] = str(together)
    _, error = run_script([str(settings.evaluator), "--checkpoint", *checkpoints, *flags],
                          settings, device, log)
    if error:
        together.unlink(missing_ok=True)
        if signals.stopping():   # the sweep is being stopped: no process more
            return [o or Outcome("failed", error=error) for o in outcomes]
        return [o or execute(run, split, device, settings) for run, o in zip(runs, outcomes)]
    metrics = read_json(together, f"evaluate_retrieval.py wrote no readable metrics: see {log}")
    seconds = (time.time() - start) / len(todo)
    for i, name in zip(todo, run_names(checkpoints)):
        run = runs[i]
        if run.folder != first:   # each run's folder keeps the log its metrics came from
            shutil.copyfile(log, run.folder / log.name)
        write_json_atomic(metrics[name], run.folder / f"metrics_{split}.json")
        mark_finished(run, split, settings, metrics[name])
        outcomes[i] = Outcome("done", seconds, metrics[name])
    together.unlink()
    return outcomes


def evaluate_all(runs: Sequence[Run], split: str, devices: Sequence[Device], settings: Settings,
                 progress: Callable[[int, object, Device, Outcome], None]) -> list[Outcome]:
    """Trained runs evaluated on `split`, dealt to the devices, one evaluate_retrieval.py process
    per device (evaluate_together); progress(index, run, device, outcome) for each run."""
    groups = [list(range(len(runs)))[d::len(devices)] for d in range(min(len(devices), len(runs)))]
    outcomes: list[Outcome | None] = [None] * len(runs)

    def report(_, group: list[int], device: Device, result) -> None:
        for i, outcome in zip(group, [result] * len(group) if isinstance(result, Outcome) else result):
            outcomes[i] = outcome
            progress(i, runs[i], device, outcome)

    run_all(groups, devices, lambda group, device: evaluate_together(
        [runs[i] for i in group], split, device, settings), report)
    return outcomes


def run_all(jobs: Sequence, devices: Sequence[Device], work: Callable[[object, Device], Outcome],
            progress: Callable[[int, object, Device, Outcome], None]) -> list[Outcome]:
    """work(job, device) for every job, one job per device at a time, the devices in parallel;
    progress(index, job, device, outcome) after each (never two at once). Outcomes in job order."""
    outcomes: list[Outcome | None] = [None] * len(jobs)
    lock = threading.Lock()
    queue = iter(range(len(jobs)))

    def worker(device: Device) -> None:
        while True:
            with lock:
                i = None if signals.stopping() else next(queue, None)   # none after a stop
            if i is None:
                return
            try:
                outcome = work(jobs[i], device)
            except Exception as e:  # noqa: BLE001 - one broken run must not stop the others
                outcome = Outcome("failed", error=f"{type(e).__name__}: {e}")
            with lock:
                outcomes[i] = outcome
                progress(i, jobs[i], device, outcome)

    threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException as e:   # Ctrl-C or SIGTERM: no run may outlive the sweep
        signals.stop_children(e)
        raise
    return outcomes
