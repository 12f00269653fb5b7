"""tune_weights.py --launcher slurm: each run of a phase is one task of a SLURM job array,
submitted through submitit; several nodes or ranks per run make each task a DDP group.

The job runs the same code as the local launcher (tuning.sweep.execute) on its node, so what
counts as finished, resumed or failed is the same: the markers in each run's folder are the
truth, not SLURM's job states (without accounting, `sacct` cannot say how a job ended). The
submitting process polls `squeue` until its jobs are gone and then reads the markers, so it may
also stop (--no-wait) and a later call with the same flags picks the jobs up again: each run
records its job in slurm_<split>.json.

Preemption, time-outs and `scontrol requeue`: SLURM requeues the job and the rerun continues
the run from its last.pt (tuning.sweep.start_flag), which the trainer resumes bit-exactly at
the last finished epoch. Before the requeue SLURM signals every process of the job (USR2 from
submitit's --signal, SIGTERM from the requeue) and kills them after KillWait. The trainer stops
on those signals; its job must then neither report the run as failed nor exit with a result:
it waits for the kill, and the rerun writes the result (see RunTask.__call__).
"""
from __future__ import annotations

import getpass
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from common.errors import InputError, shown
from common.files import open_regular, read_regular_text
from common.workdir import check_writable
from tuning.sweep import (ROOT, Device, Outcome, Run, Settings, execute, finished, run_script,
                          start_flag, train)

JOB_NAME = "tune_weights"
POLL_S = 1.0
# Exit statuses of a script stopped by a signal SLURM sends before it kills or requeues a job.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
STOPPED_WAIT_S = 180    # a stopped trainer's job waits this long for SLURM's kill, at most


@dataclass(frozen=True)
class SlurmOptions:
    folder: Path                          # submitit's files, one subfolder per submission
    partition: str | None = None
    time: str = "60"                      # as sbatch takes it: MM, HH:MM:SS, D-HH, ...
    gpus_per_run: int = 0                 # per node
    cpus_per_run: int | None = None       # per task (rank)
    mem: str | None = None                # per node, as sbatch takes it (8G)
    max_parallel: int | None = None       # the array's % limit
    nodes: int = 1
    tasks_per_node: int = 1               # DDP ranks per node
    extra: dict = field(default_factory=dict)
    wait: bool = True

    @property
    def ranks(self) -> int:
        return self.nodes * self.tasks_per_node

    def sbatch_flags(self) -> list[str]:
        """The flags these options become in sbatch (for the --test-only check; submitit writes
        the same as #SBATCH lines)."""
        flags = [f"--nodes={self.nodes}", f"--ntasks-per-node={self.tasks_per_node}"]
        if self.partition:
            flags.append(f"--partition={self.partition}")
        flags.append(f"--time={self.time}")
        if self.gpus_per_run:
            flags.append(f"--gpus-per-node={self.gpus_per_run}")
        if self.cpus_per_run:
            flags.append(f"--cpus-per-task={self.cpus_per_run}")
        if self.mem:
            flags.append(f"--mem={self.mem}")
        flags += [f"--{k}={v}" for k, v in self.extra.items()]
        return flags


def parse_extra(items: Sequence[str]) -> dict:
    """--slurm-extra KEY=VALUE (repeated) as sbatch's long flags, e.g. qos=high -> --qos=high."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise InputError(f"--slurm-extra {shown(item)}: give KEY=VALUE, an sbatch long flag "
                             "without its dashes (qos=high, constraint=a100)")
        extra[key.replace("_", "-")] = value
    return extra


def minutes(text: str) -> int:
    """sbatch's --time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes, rounded
    up: submitit writes --time in minutes and times its USR2 from it. ValueError otherwise."""
    days, rest = text.split("-", 1) if "-" in text else (None, text)
    parts = [int(p) for p in rest.split(":")]
    if len(parts) > 3:
        raise ValueError(text)
    if days is not None:
        h, m, s = (parts + [0, 0])[:3]
        h += 24 * int(days)
    else:
        h, m, s = {1: (0, parts[0], 0), 2: (0, *parts)}.get(len(parts), tuple(parts))
    return max(1, h * 60 + m + (s > 0))


def add_flags(p) -> None:
    """tune_weights.py's --launcher and the SLURM flags."""
    g = p.add_argument_group("SLURM (--launcher slurm: each run one task of a job array)")
    g.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: the runs over --devices on this machine; slurm: submitted "
                        "through submitit, requeued runs resuming from their last.pt")
    g.add_argument("--partition", help="sbatch --partition (default: the cluster's)")
    g.add_argument("--time", help="sbatch --time of one run, e.g. 4:00:00 or 1-12 (needed: "
                                  "submitit would ask for 5 minutes)")
    g.add_argument("--gpus-per-run", type=int, default=0, metavar="G",
                   help="sbatch --gpus-per-node: GPUs of each node of a run (0: the CPU)")
    g.add_argument("--cpus-per-run", type=int, default=None, metavar="C",
                   help="sbatch --cpus-per-task: cores of each rank of a run")
    g.add_argument("--mem", help="sbatch --mem per node, e.g. 32G")
    g.add_argument("--max-parallel", type=int, default=None, metavar="N",
                   help="runs at once: the job array's %%N")
    g.add_argument("--nodes", type=int, default=1,
                   help="nodes per run: one DDP group over nodes x --tasks-per-node ranks")
    g.add_argument("--tasks-per-node", type=int, default=None, metavar="T",
                   help="DDP ranks per node (sbatch --ntasks-per-node; default: --gpus-per-run, "
                        "at least 1); --batch-size stays per rank")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch flag, e.g. qos=high or constraint=a100 (repeatable)")
    g.add_argument("--slurm-folder", default=None,
                   help="submitit's files (default: OUT/slurm)")
    g.add_argument("--no-wait", action="store_true",
                   help="return once the jobs are submitted; the same command again collects "
                        "them (or waits) and goes on with the next phase")


def misused(args) -> str | None:
    """The SLURM flag given to the local launcher, or --devices given to SLURM's, if any."""
    if args.launcher == "slurm":
        return "--devices: the local launcher's; under --launcher slurm give --gpus-per-run" \
            if args.devices != "auto" else None
    for flag in ("partition", "time", "mem", "cpus_per_run", "max_parallel", "tasks_per_node",
                 "slurm_folder"):
        if getattr(args, flag) is not None:
            return f"--{flag.replace('_', '-')} is for --launcher slurm: add it, or leave the flag out"
    if args.gpus_per_run or args.nodes != 1 or args.slurm_extra or args.no_wait:
        return "--gpus-per-run, --nodes, --slurm-extra and --no-wait are for --launcher slurm: " \
               "add it, or leave them out"
    return None


def options(args, out: Path) -> SlurmOptions:
    """The options of parsed flags; bad values are InputErrors."""
    for flag, value, least in (("--gpus-per-run", args.gpus_per_run, 0), ("--nodes", args.nodes, 1),
                               ("--tasks-per-node", args.tasks_per_node, 1),
                               ("--cpus-per-run", args.cpus_per_run, 1),
                               ("--max-parallel", args.max_parallel, 1)):
        if value is not None and value < least:
            raise InputError(f"{flag} must be at least {least} (got {value})")
    if not args.time:
        # submitit would ask for 5 minutes, and every run would end as a time-out.
        raise InputError("--launcher slurm needs --time, one run's time limit as sbatch takes it "
                         "(e.g. 4:00:00 or 1-12); keep it above 15 minutes: below that submitit "
                         "takes every preemption for a time-out")
    tasks = args.tasks_per_node or max(1, args.gpus_per_run)
    return SlurmOptions(folder=Path(args.slurm_folder or out / "slurm").resolve(),
                        partition=args.partition, time=args.time, gpus_per_run=args.gpus_per_run,
                        cpus_per_run=args.cpus_per_run, mem=args.mem,
                        max_parallel=args.max_parallel, nodes=args.nodes, tasks_per_node=tasks,
                        extra=parse_extra(args.slurm_extra), wait=not args.no_wait)


def check(options: SlurmOptions) -> None:
    """One line, before any run is submitted, for what SLURM would refuse later: no sbatch, a
    partition or --time it rejects (its own message), a folder submitit cannot write."""
    for tool in ("sbatch", "squeue"):
        if shutil.which(tool) is None:
            raise InputError(f"--launcher slurm: {tool} is not on the PATH: run on a SLURM "
                             "cluster's login node, or use --launcher local")
    try:
        check_writable(options.folder, folder=True, fix="pass another --slurm-folder")
    except InputError as e:
        raise InputError(f"--slurm-folder (submitit's files): {e}") from None
    probe = subprocess.run(["sbatch", "--test-only", *options.sbatch_flags(), "--wrap=true"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        errors = [line.split("error:", 1)[1].strip() for line in probe.stderr.splitlines()
                  if "error:" in line] or [probe.stderr.strip() or f"exit {probe.returncode}"]
        raise InputError(f"--launcher slurm: sbatch refuses the runs' settings "
                         f"({' '.join(options.sbatch_flags())}): {'; '.join(errors)}")
    try:
        minutes(options.time)
    except ValueError:   # sbatch took a form this parser does not know
        raise InputError(f"--time {shown(options.time)}: give MM, HH:MM:SS or "
                         "D-HH:MM:SS") from None


class RunTask:
    """One run of one phase, as a SLURM task. submitit's checkpoint hook (called on USR2, before
    submitit requeues the job) returns the task unchanged: the rerun decides from the run's
    folder whether to resume from last.pt, as a rerun of the sweep would."""

    def __init__(self, run: Run, split: str, settings: Settings, gpus: int):
        self.run, self.split, self.settings, self.gpus = run, split, settings, gpus

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> Outcome | None:
        import submitit
        env = submitit.JobEnvironment()
        flag = "cuda" if self.gpus else "cpu"
        # torch would take every core of the node, however many other tasks share it.
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        plain = Device(f"slurm job {env.job_id}", flag, (("OMP_NUM_THREADS", cpus),) if cpus else ())
        if env.num_tasks == 1:
            return self._unless_stopped(execute(self.run, self.split, plain, self.settings))
        ranked = replace(plain, env=(*plain.env, *ddp_env(env).items()))
        if env.global_rank != 0:
            # The other ranks only train, with the start rank 0 decides from the same files.
            if self.split == "val" and finished(self.run, self.split, self.settings) is None:
                start = start_flag(self.run, self.settings)
                if start is not None:
                    self.run.folder.mkdir(parents=True, exist_ok=True)
                    code, error = run_script(self.settings.train_command(self.run) + [start],
                                             self.settings, ranked,
                                             self.run.folder / f"train_rank{env.global_rank}.log")
                    self._unless_stopped(Outcome("failed", code=code, error=error) if error else None)
            return None
        if self.split == "val" and finished(self.run, self.split, self.settings) is None:
            code, error, _ = train(self.run, ranked, self.settings)
            if error:
                return self._unless_stopped(Outcome("failed", code=code, error=error))
        # Trained: execute() only evaluates, in one process.
        return self._unless_stopped(execute(self.run, self.split, plain, self.settings))

    @staticmethod
    def _unless_stopped(outcome: Outcome | None) -> Outcome | None:
        """A script stopped by SLURM's signals means the job is being requeued or cancelled: wait
        for SLURM's kill instead of leaving a failed result the rerun would have to replace."""
        stopped = {int(s) for s in STOP_SIGNALS} | {128 + int(s) for s in STOP_SIGNALS}
        if outcome is not None and outcome.status == "failed" and abs(outcome.code) in stopped:
            print(f"stopped by a signal ({outcome.error}); waiting for SLURM to requeue or end "
                  "the job", flush=True)
            time.sleep(STOPPED_WAIT_S)
        return outcome


def ddp_env(env) -> dict:
    """What torchrun would set, from the SLURM task's place in its job: rank 0's node is the
    rendezvous, on a port derived from the job id (two jobs on one node do not collide)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "1")
    return {"RANK": str(env.global_rank), "LOCAL_RANK": str(env.local_rank),
            "WORLD_SIZE": str(env.num_tasks),
            "LOCAL_WORLD_SIZE": str(env.num_tasks // max(1, env.num_nodes)),
            "MASTER_ADDR": env.hostnames[0],
            "MASTER_PORT": str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000),
            # torchrun's choice for several ranks on one node; the numbers then match its runs.
            "OMP_NUM_THREADS": cpus}


def record_path(run: Run, split: str) -> Path:
    return run.folder / f"slurm_{split}.json"


def active_jobs() -> set[str] | None:
    """Ids of this user's jobs SLURM still holds (pending, running, requeued; array tasks one by
    one), or None when squeue cannot answer."""
    try:
        p = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {line.strip() for line in p.stdout.splitlines() if line.strip()} if p.returncode == 0 else None


def _recorded(run: Run, split: str, settings: Settings, active: set[str]) -> dict | None:
    """The job an earlier call submitted for this run with these settings, if SLURM holds it."""
    try:
        record = json.loads(read_regular_text(record_path(run, split)))
    except (OSError, ValueError):
        return None
    if record.get("key") == settings.key(run, split) and record.get("job") in active:
        return record
    return None


def _job_outcome(run: Run, split: str, settings: Settings, record: dict) -> Outcome:
    """A job SLURM no longer holds: its run's marker, else the failure its result or log holds."""
    from submitit.core.utils import JobPaths
    metrics = finished(run, split, settings)
    if metrics is not None:   # its time: since it was submitted, the queue's wait included
        return Outcome("done", time.time() - float(record.get("submitted", time.time())), metrics)
    paths = JobPaths(record["folder"], job_id=record["job"], task_id=0)
    try:
        with open_regular(paths.result_pickle) as f:
            kind, value = pickle.load(f)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, ImportError):
        kind, value = None, None
    if kind == "success" and isinstance(value, Outcome) and value.status == "failed":
        return value
    if kind == "error":
        lines = [x for x in str(value).splitlines() if x.strip()]
        return Outcome("failed", error=f"SLURM job {record['job']} raised, see {paths.stderr}: "
                                       f"{lines[-1].strip() if lines else '(no traceback)'}")
    log = paths.stderr if paths.stderr.is_file() else paths.stdout
    try:
        lines = [x for x in read_regular_text(log, errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    return Outcome("failed", error=f"SLURM job {record['job']} ended without finishing the run "
                                   f"(cancelled, killed or out of memory), see {log}: "
                                   f"{lines[-1].strip() if lines else '(no output)'}")


def _submit(runs: Sequence[Run], split: str, settings: Settings, options: SlurmOptions) -> list[dict]:
    import submitit
    # A folder per submission: job ids restart at 1 on a cluster whose state was wiped, and a
    # reused folder would hand a new job an old job's result.
    base = options.folder / f"{split}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    executor = submitit.SlurmExecutor(folder=base / "%j")
    if split != "val":   # evaluation only: one process, whatever the training's group was
        options = replace(options, nodes=1, tasks_per_node=1, gpus_per_run=min(1, options.gpus_per_run))
    params = dict(job_name=JOB_NAME, nodes=options.nodes, ntasks_per_node=options.tasks_per_node,
                  partition=options.partition, gpus_per_node=options.gpus_per_run or None,
                  cpus_per_task=options.cpus_per_run, mem=options.mem,
                  additional_parameters=dict(options.extra) or None,
                  # The job imports this package from wherever sbatch starts it.
                  setup=[f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"])
    params["time"] = minutes(options.time)
    if options.max_parallel:
        params["array_parallelism"] = options.max_parallel
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    with executor.batch():
        jobs = [executor.submit(RunTask(run, split, settings, options.gpus_per_run)) for run in runs]
    records = []
    for run, job in zip(runs, jobs):
        record = {"job": job.job_id, "folder": str(base / "%j"), "key": settings.key(run, split),
                  "submitted": time.time()}
        run.folder.mkdir(parents=True, exist_ok=True)
        record_path(run, split).write_text(json.dumps(record) + "\n")
        for suffix, path in (("out", job.paths.stdout), ("err", job.paths.stderr)):
            link = run.folder / f"slurm_{split}.{suffix}"   # the job's own log, beside the run's
            link.unlink(missing_ok=True)
            link.symlink_to(path)
        records.append(record)
    return records


def run_all(runs: Sequence[Run], split: str, settings: Settings, options: SlurmOptions,
            progress: Callable[[int, Run, Device, Outcome], None]) -> list[Outcome] | None:
    """Every unfinished run of the phase as a SLURM array task (none for a run whose job an
    earlier call left running); progress() as each ends. None when options.wait is off and a
    job is still pending or running."""
    outcomes: list[Outcome | None] = [None] * len(runs)
    waiting: dict[int, dict] = {}
    active = active_jobs() or set()
    to_submit = []
    for i, run in enumerate(runs):
        metrics = finished(run, split, settings)
        if metrics is not None:
            outcomes[i] = Outcome("reused", metrics=metrics)
            progress(i, run, Device("slurm"), outcomes[i])
        elif (record := _recorded(run, split, settings, active)) is not None:
            waiting[i] = record
        else:
            to_submit.append(i)
    if to_submit:
        records = _submit([runs[i] for i in to_submit], split, settings, options)
        waiting.update(zip(to_submit, records))
        first = records[0]["job"].split("_")[0]
        print(f"submitted {len(to_submit)} runs ({split}) to SLURM as job array {first}; "
              f"submitit's files in {Path(records[0]['folder']).parent}", flush=True)
    if waiting and not options.wait:
        print(f"{len(waiting)} runs ({split}) pending or running on SLURM: run the same command "
              "again to collect them (it submits nothing that is still there)", flush=True)
        return None
    misses = 0
    while waiting:
        time.sleep(POLL_S)
        active = active_jobs()
        if active is None:
            misses += 1
            if misses * POLL_S > 300:
                raise InputError("squeue has not answered for 5 minutes: the jobs may still run; "
                                 "run the same command again to collect them")
            continue
        misses = 0
        for i in [i for i, r in waiting.items() if r["job"] not in active]:
            record = waiting.pop(i)
            outcomes[i] = _job_outcome(runs[i], split, settings, record)
            progress(i, runs[i], Device(f"slurm job {record['job']}"), outcomes[i])
    return outcomes  # type: ignore[return-value]
