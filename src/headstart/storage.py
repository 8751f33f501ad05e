"""Files that survive a crash: atomic writes, one lock per output folder, temp-file cleanup.

Every file headstart writes into a run folder, a sweep folder or the embedding cache goes
through :func:`atomic_write`: the bytes go to a hidden temporary file in the same folder,
which is flushed and fsynced, then renamed over the target (a rename within one
filesystem is atomic), and the folder is fsynced so the rename itself survives a power
cut. A reader therefore sees the old file or the new one, never a torn one. A full disk
becomes a :class:`~headstart.errors.DiskFullError` naming the folder and the space
needed, and the temporary file is removed.

A temporary file is named ``.<name>.<pid>.tmp``. A process killed between writing one
and renaming it (``kill -9``, a power cut) leaves it behind; :func:`clean_temp_files`
removes those of processes that are no longer running, and every command calls it on the
folders it writes when it starts.

:func:`folder_lock` holds an OS file lock (``flock``) on ``<folder>/.headstart.lock``
for as long as a command writes the folder, so that two runs into one folder cannot mix
their files: the second is refused, naming the process that holds the lock. The OS
releases the lock when its process dies, however it dies, so a lock left by a dead
process is never in the way; the lock file still names that process, and the next
command reports that it took the lock over. (Written here rather than with the
``filelock`` package, whose Unix lock truncates the lock file on every acquire and so
cannot say which process held it.)

``HEADSTART_FAULT`` injects a fault for crash tests: ``kill:<name pattern>[:<n>]`` kills
the process (SIGKILL) at the n-th atomic write of a file whose name matches the pattern
(``fnmatch``), after the temporary file is written and before the rename;
``enospc:<name pattern>[:<n>]`` makes that write fail as on a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import inspect
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from headstart.errors import DiskFullError, RunFolderError

LOCK_NAME = ".headstart.lock"
#: a temporary file of :func:`atomic_write` (and, without the dot, of older versions)
_TEMP = re.compile(r"^\.?(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
_FULL = {errno.ENOSPC, errno.EDQUOT}
_writes: Counter[str] = Counter()


def temp_path(path: Path) -> Path:
    """The hidden temporary file ``path`` is written to before the rename."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def free_bytes(folder: Path) -> int | None:
    """Free space on the filesystem of ``folder`` (None when it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(path: Path, needed: int | None, err: OSError | None = None) -> DiskFullError:
    """The error for a write of ``needed`` bytes to ``path`` that found the disk full."""
    folder = path.parent
    free = free_bytes(folder)
    need = f"{_human(needed)}" if needed is not None else "more space"
    return DiskFullError(
        f"{need} free in {folder} to write {path.name}",
        f"{_human(free) if free is not None else 'too little'} free there "
        f"({err.strerror if err is not None and err.strerror else 'no space left on device'})",
        "free space on that disk or write elsewhere (another --out, or HEADSTART_CACHE for "
        "the embedding cache); an interrupted fit continues with --resume",
    )


def _fault(path: Path) -> None:
    """The fault ``HEADSTART_FAULT`` asks for at this write of ``path``, if any."""
    spec = os.environ.get("HEADSTART_FAULT")
    if not spec:
        return
    action, _, rest = spec.partition(":")
    pattern, _, nth = rest.partition(":")
    if not fnmatch.fnmatchcase(path.name, pattern):
        return
    _writes[pattern] += 1
    if _writes[pattern] != int(nth or 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a filesystem that cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically and durably: a temporary file
    in the same folder, fsynced, renamed over ``path``. A full disk raises
    :class:`DiskFullError`; the temporary file never outlives a failed write."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        _fault(path)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in _FULL:
            raise disk_full(path, len(payload), e) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON, atomically (``obj`` must be plain JSON data)."""
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=False))


def write_yaml(path: str | Path, doc: Any) -> None:
    """``doc`` as YAML (``safe_dump``, keys in order), atomically."""
    import yaml

    atomic_write(path, yaml.safe_dump(doc, sort_keys=False))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` that a process killed mid-write
    left in ``folder`` (those of live processes are kept); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob("*.tmp") if recursive else folder.glob("*.tmp")
    removed = []
    for p in found:
        m = _TEMP.match(p.name)
        if m is None or process_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


_held: set[Path] = set()  # the folders this process holds the lock of


def _holder(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (
        f"process {holder.get('pid', '?')} on {holder.get('host', '?')} since {when} "
        f"(`{holder.get('command', '?')}`)"
    )


def check_out_folder(out: str | Path, flag: str = "--out") -> None:
    """``out`` can be an output folder: it is a folder, or it and the folders above it
    that are missing can be made (no file stands in the way)."""
    path = Path(out).expanduser()
    for part in (path, *path.parents):
        try:
            if part.is_dir():
                return
            taken = os.path.lexists(part)  # a file, or a dangling link
        except OSError:  # a name too long to be a path, and the like
            taken = False
        if taken:
            where = "" if part == path else f" (on the way to {path})"
            raise RunFolderError(
                f"{flag} naming a folder (new, or one to write into)",
                f"{part} is a file{where}",
                f"pass another {flag}, or move that file away",
            )


def _lock_fd(folder: Path, what: str) -> tuple[int, bool]:
    check_out_folder(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644), created
    except OSError as e:
        if e.errno in _FULL:
            raise disk_full(folder / LOCK_NAME, None, e) from e
        raise


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "run", say: Any = None) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if missing) while the block runs; refuse with
    :class:`RunFolderError` naming the holder when another process holds it. ``say``
    (a callable taking a message) hears when a dead process's lock is taken over. The
    same process may take the lock of a folder it already holds."""
    import fcntl

    folder = Path(folder).absolute()
    if folder in _held:  # this process holds it already (a workflow inside another)
        yield
        return
    fd, created = _lock_fd(folder, what)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        os.close(fd)
        raise RunFolderError(
            f"a {what} folder that no other headstart command is writing",
            f"{_describe(holder)} holding {folder / LOCK_NAME}",
            "wait for that command to finish (or stop it), or pass another --out",
        ) from None
    previous = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
    if previous and previous.get("pid") != os.getpid() and say is not None:
        say(
            f"[yellow]lock[/]: {folder} was locked by {_describe(previous)}, which is no "
            "longer running; taking it over"
        )
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    _held.add(folder)
    for sub in [folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())]:
        clean_temp_files(sub)  # the folder and its subfolders (checkpoint/), not deeper
    try:
        yield
    finally:
        _held.discard(folder)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a clean release: nothing to report as taken over
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                (folder / LOCK_NAME).unlink()  # a command that failed before writing
                folder.rmdir()  # anything leaves no folder behind
        os.close(fd)  # closing the descriptor releases the lock


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a JSON-lines log, fsynced. A line torn by a kill is left as is
    (readers skip it) and the new line starts on a line of its own."""
    path = Path(path)
    try:
        with open(path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END) or f.read(1) != b"\n")
            f.write((("\n" if torn else "") + line + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno in _FULL:
            raise disk_full(path, len(line) + 1, e) from e
        raise


def write_csv(path: str | Path, rows: Iterable[Sequence[Any]]) -> None:
    """Rows (the header first) as CSV, atomically."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write(path, buf.getvalue())


F = TypeVar("F", bound=Callable[..., Any])


def locked(what: str) -> Callable[[F], F]:
    """Run the decorated command under :func:`folder_lock` of its ``out`` argument (when
    it is not None); a ``console`` argument hears about a lock taken over."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            given = sig.bind_partial(*args, **kwargs).arguments
            out, console = given.get("out"), given.get("console")
            if out is None:
                return fn(*args, **kwargs)
            with folder_lock(out, what, console.print if console is not None else None):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


def write_safetensors(
    tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """``tensors`` as a safetensors file, written atomically (:func:`atomic_write`)."""
    from safetensors.torch import save

    atomic_write(path, save(tensors, metadata=metadata))


@contextlib.contextmanager
def replaced_folder(final: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` for the block to fill; then it replaces
    ``final`` by renames (the old one is moved aside first, then removed). A kill inside
    the block leaves ``final`` as it was; its temporary folder is removed as a temporary
    file is (:func:`clean_temp_files`)."""
    final = Path(final)
    tmp = temp_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _fault(final)
        old = final.with_name(f".{final.name}.old.{os.getpid()}.tmp")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
