"""The demo's training job: every demo job runs this text (`python -c`), and the `trainer` workdir
ships it as a file with its data.

Works DEMO_WORK_S seconds (forever without it), saves its progress to the runner's checkpoint
file every DEMO_CHECKPOINT_S, and on SIGTERM (preemption notice or cancel) saves and leaves, so a
requeued run resumes where the last one stopped. Where its working directory has a data/ folder
(shipped with the workdir) it reads the shards there first, by relative path, and says so.
"""

import os
import signal
import time
from pathlib import Path

ckpt = Path(os.environ["NEOCLOUD_CHECKPOINT_FILE"])
work = float(os.environ.get("DEMO_WORK_S", "inf"))
every = float(os.environ.get("DEMO_CHECKPOINT_S", "inf"))
for shard in sorted(Path("data").glob("*.txt")):
    lines = shard.read_text(encoding="utf-8").splitlines()
    print(
        f"rank {os.environ.get('NEOCLOUD_RANK', '0')} in {os.getcwd()}: read {len(lines)} lines of {shard}", flush=True
    )
try:
    done = float(ckpt.read_text())
except (OSError, ValueError):
    done = 0.0
stop: list[int] = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))


def save() -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.write_text(f"{done:.3f}")
    tmp.replace(ckpt)


print(f"starting at {done:.1f} s of {work:g} s of work", flush=True)
saved, last = done, time.monotonic()
while done < work and not stop:
    time.sleep(min(0.2, work - done))
    now = time.monotonic()
    done, last = done + now - last, now
    if done - saved >= every:
        save()
        saved = done
if stop:
    notice = Path(os.environ["NEOCLOUD_PREEMPT_NOTICE_FILE"])
    why = notice.read_text().strip() if notice.exists() else "stopped"
    if every < float("inf"):
        save()
    print(f"stopping at {done:.1f} s: {why}", flush=True)
else:
    print("work done", flush=True)
