"""Stopping a script: SIGTERM and SIGHUP unwind it as Ctrl-C does, and its children stop with it.

Without a handler SIGTERM (what `kill`, a batch scheduler or a closed terminal sends) ends the
process at once: no `finally` runs, so a checkpoint being saved leaves its temporary file, and a
child process (a sweep's trainer) runs on as an orphan. Here the signal raises Stopped in the
main thread, every `finally` removes what it was writing, and the script exits 128 + the signal
(143 for SIGTERM, 130 for Ctrl-C). Children run in their own process group (so a Ctrl-C at the
terminal reaches only the parent) and get the parent's signal forwarded exactly once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading

HANDLED = (signal.SIGTERM, signal.SIGHUP)
GRACE_S = 30     # how long a stopped child may take to clean up before it is killed


class Stopped(BaseException):
    """A SIGTERM or SIGHUP: a BaseException, as KeyboardInterrupt, so no `except Exception`
    swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def status(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_stopping = False
_children: set[subprocess.Popen] = set()
_lock = threading.Lock()


def _raise(signum: int, frame) -> None:
    global _stopping
    if _stopping:
        return   # a second signal must not cut short the clean-up the first one started
    _stopping = True
    raise Stopped(signum)


def _default_in_child() -> None:
    # A forked worker (DataLoader, multiprocessing pool) is stopped by its parent with SIGTERM
    # and must simply die, not unwind a copy of the parent's state.
    for s in HANDLED:
        signal.signal(s, signal.SIG_DFL)


def install() -> dict:
    """Handle SIGTERM and SIGHUP in this process (main thread only) until restore(the returned
    value). A signal the process was started ignoring (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    before = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        if before[s] is not signal.SIG_IGN:
            signal.signal(s, _raise)
    if not getattr(install, "_registered", False):
        os.register_at_fork(after_in_child=_default_in_child)
        install._registered = True
    return before


def restore(before: dict) -> None:
    """The handlers install() replaced: a script's main() run inside another Python program
    (the tests) leaves that program's own handling as it was."""
    global _stopping
    for s, handler in before.items():
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    _stopping = False


def stopping() -> bool:
    """Whether this process is being stopped: start no new work."""
    return _stopping


def status_of(e: BaseException) -> int:
    """The exit status of a script stopped by `e` (Stopped or KeyboardInterrupt)."""
    return e.status if isinstance(e, Stopped) else 128 + signal.SIGINT


def stop_children(e: BaseException) -> None:
    """Forward the signal that stopped this process to every running child, then wait for each
    to clean up (SIGKILL after GRACE_S seconds)."""
    global _stopping
    _stopping = True   # no new child starts from here on
    signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
    with _lock:
        children = list(_children)
    for proc in children:
        if proc.poll() is None:
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass
    for proc in children:
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _prctl():
    """Linux's prctl, or None (elsewhere a child of a killed parent is not stopped for it)."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int):
    """For Popen's preexec_fn: the child gets SIGTERM when the thread that started it dies, as it
    does when the parent is killed with SIGKILL (no handler of the parent's runs then, so
    stop_children cannot): a sweep's trainer never trains on as an orphan. A parent already gone
    before the request took effect ends the child at once."""
    if _PRCTL is None:
        return None

    def in_child() -> None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(128 + signal.SIGTERM)
    return in_child


def run_child(cmd: list[str], **kwargs) -> int:
    """subprocess.run(cmd, **kwargs).returncode, in its own process group, stopped with this
    process: call stop_children when the caller is stopped (the main thread is interrupted while
    other threads wait here)."""
    with _lock:
        if _stopping:
            return 128 + signal.SIGTERM
        proc = subprocess.Popen(cmd, process_group=0, preexec_fn=_die_with(os.getpid()), **kwargs)
        _children.add(proc)
    try:
        return proc.wait()
    except BaseException as e:   # this thread was the one stopped
        stop_children(e)
        raise
    finally:
        with _lock:
            _children.discard(proc)
