"""A watch over the jobs of a runner that outlives it: when the runner dies,
every process of its jobs' sessions is killed at once.

The runner stops a job through its stop path; a runner that is itself killed
(ray.kill, its node's raylet gone, the OOM killer) has none. PR_SET_PDEATHSIG
(procs.py) then kills the job's leader, but the rest of its session (a shell's
children, a launcher's workers) ran on under init, holding GPUs for a job that
is gone. So each runner process gets one sweeper: a tiny process, in a session
of its own and not the runner's child (Ray kills a dead worker's children,
and the sweeper must outlive it), to which the runner writes each job's
session id down a pipe. The pipe's end of file is the runner's death, seen at
once; the sweeper then kills every process of those sessions and exits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import threading

logger = logging.getLogger(__name__)

# Runs as `python -I -S -c`, its stdin the pipe. It forks at once and the first process
# exits, so the sweeper is reparented away from the runner (see _launch).
_SWEEPER = """\
import os,select,sys,time
if os.fork():os._exit(0)
os.setsid()
def live():
    out={}
    for e in os.listdir('/proc'):
        if not e.isdigit():continue
        try:f=open('/proc/'+e+'/stat','rb').read().rsplit(b')',1)[1].split()
        except (OSError,IndexError):continue
        if f[0]!=b'Z':
            out.setdefault(int(f[2]),[]).append(int(e));out.setdefault(int(f[3]),[]).append(int(e))
    return out
sids,buf,pruned=set(),b'',time.monotonic()
while True:
    if select.select([0],[],[],1.0)[0]:
        data=os.read(0,4096)
        if not data:break
        *lines,buf=(buf+data).split(b'\\n')
        sids.update(int(x) for x in lines if x.strip())
    if sids and time.monotonic()-pruned>=1.0:
        sids&=set(live());pruned=time.monotonic()
end=time.monotonic()+10
while sids and time.monotonic()<end:
    found=live();pids={p for s in sids for p in found.get(s,())}
    if not pids:break
    for p in pids:
        try:os.kill(p,9)
        except OSError:pass
    time.sleep(0.02)
"""

_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37

_lock = threading.Lock()
_pipe: int | None = None  # the write end, open as long as this (the runner's) process lives


def guard(session: int) -> None:
    """Have this process's sweeper kill the job session `session` if this process dies first."""
    global _pipe
    line = f"{session}\n".encode()
    with _lock:
        for attempt in (1, 2):  # a sweeper that died is started again, once
            try:
                if _pipe is None:
                    _pipe = _launch()
                os.write(_pipe, line)
                return
            except OSError as e:
                if _pipe is not None:
                    os.close(_pipe)
                    _pipe = None
                if attempt == 2:
                    logger.error("no sweeper for job session %d: it would outlive a killed runner: %s", session, e)


def _launch() -> int:
    """Start the sweeper; return the pipe's write end (close-on-exec: no job inherits it).

    Not the runner's child: its first process exits at once, and the sweeper is
    reparented to the nearest child subreaper above it, which must not be the
    runner (it is one, to reap its jobs' orphans), so that flag is lifted meanwhile."""
    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.c_int(0)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
    read_end, write_end = os.pipe()
    try:
        if was.value:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SWEEPER],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        launcher.wait()
    except BaseException:
        os.close(write_end)
        raise
    finally:
        if was.value:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        os.close(read_end)
    return write_end
