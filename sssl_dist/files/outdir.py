"""An output directory that one command writes at a time.

Two `sssl shard` runs into one directory would overwrite each other's shards, and one's
stale-shard clean-up could delete the other's; two `sssl predict` runs would commit parts of
one done-list twice. The second command fails at once, naming the lock it found.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout


class DirectoryBusy(RuntimeError):
    """Another command holds the output directory."""


def hold(out: Path, command: str, lock_name: str) -> FileLock:
    """Hold `out` for this command (release the returned lock when done), or raise
    DirectoryBusy. The lock is an OS file lock: a killed holder releases it."""
    lock = FileLock(str(out / lock_name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DirectoryBusy(
            f"another `{command}` is writing to {out} (it holds {out / lock_name}); "
            "wait for it to finish or choose another --out"
        ) from None
    return lock


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (its temporary files are in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
