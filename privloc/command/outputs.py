"""Output folders of the `privloc` command: claimed before any work, replaced only if privloc wrote them.

A command claims its `--out` first: the claim refuses a folder that is (or contains) an input of the run, the
working directory, the home folder, and any existing folder without privloc's marker file; it takes a lock
beside the folder so that a second run on the same `--out` is refused while the first one works; and it makes
the staging folder the output is written into, which also proves the parent writable before hours of
computation. On success the staging folder and the old output swap places in one atomic rename (or the
staging folder takes the free name), and only then is the old output deleted. What a killed run leaves beside
the folder (`.NAME.privloc-partial-PID`, `.NAME.privloc-old-PID`, each carrying the marker from its creation) is
cleaned up by the next run that claims the same `--out`; nothing else beside it is ever touched.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import re
import shutil
from pathlib import Path

from privloc import __version__
from privloc.command.inputs import InputError

MARKER = ".privloc-output.json"  # written into every output folder: what makes it privloc's to replace
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux's renameat2 with `flags`; False where the system or file system does not offer it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def written_by_privloc(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("privloc") is not None
    except (OSError, ValueError, AttributeError):
        return False


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


class Claim:
    """The right to write one output folder: use as `with claim(...) as staging:` and write into `staging`."""

    def __init__(self, out: Path, command: str):
        self.out, self.command = out, command
        self.lock = out.with_name(f".{out.name}.privloc-lock")
        self.staging = out.with_name(f".{out.name}.privloc-partial-{os.getpid()}")
        self.old = out.with_name(f".{out.name}.privloc-old-{os.getpid()}")
        self.notes: list[str] = []

    def _take_lock(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                try:
                    pid = int(self.lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise InputError(f"another privloc run (pid {pid}) is writing {self.out}: wait for it, or "
                                     "choose another --out") from None
                self.lock.unlink(missing_ok=True)  # left by a run that was killed
                continue
            except OSError as error:
                raise InputError(f"cannot write beside {self.out}: {error.strerror} ({self.out.parent})") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return
        raise InputError(f"cannot lock {self.out}: {self.lock} keeps reappearing")

    def _clean_leftovers(self) -> None:
        """Remove what killed runs left beside the folder (we hold the lock, so none of it is live)."""
        # The name is escaped: an --out such as "run[1]" or "a*" must not match other folders' leftovers.
        # Only folders with the exact names a claim gives and privloc's marker: never a user's file or folder.
        own = re.compile(re.escape(f".{self.out.name}.privloc-") + r"(partial|old)-\d+")
        leftovers = sorted(p for p in self.out.parent.glob(f"{glob.escape('.' + self.out.name)}.privloc-*")
                           if own.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and written_by_privloc(p))
        olds = [p for p in leftovers if ".privloc-old-" in p.name]
        if not self.out.exists() and olds:
            # Killed between moving the old output aside and moving the new one in: put the old one back.
            os.rename(olds[0], self.out)
            self.notes.append(f"restored {self.out} from an interrupted run")
        for path in leftovers:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                self.notes.append(f"removed {path.name}, left by an interrupted run")

    def __enter__(self) -> Path:
        self._take_lock()
        try:
            self._clean_leftovers()
            os.mkdir(self.staging, 0o777)  # the user's umask applies, as to any folder they create
            # Marked from the start, so that a killed run's leftover is known to be privloc's (_finish rewrites it).
            (self.staging / MARKER).write_text(json.dumps({"privloc": __version__, "partial": True}) + "\n")
        except BaseException as error:
            self.lock.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise InputError(f"cannot write {self.out}: {error.strerror}") from None
            raise
        return self.staging

    def _finish(self) -> None:
        (self.staging / MARKER).write_text(json.dumps({"privloc": __version__, "command": self.command}) + "\n")
        for root, dirs, files in os.walk(self.staging):
            # Temporary files are created private (0600); the output gets the modes the user's umask asks for.
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~UMASK)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~UMASK)
        os.chmod(self.staging, 0o777 & ~UMASK)
        if self.out.exists() and not written_by_privloc(self.out):
            # Checked when --out was claimed, and again here: the folder may have been replaced during the run.
            raise FileExistsError(errno.EEXIST, "was replaced by a folder privloc did not write", str(self.out))
        if self.out.exists():
            if _renameat2(self.staging, self.out, _RENAME_EXCHANGE):
                # One atomic step: the new output is in place and the old one sits at the staging name.
                shutil.rmtree(self.staging)
                return
            os.rename(self.out, self.old)  # a kill from here to the next line is repaired by the next claim
            os.rename(self.staging, self.out)
            shutil.rmtree(self.old)
            return
        if not _renameat2(self.staging, self.out, _RENAME_NOREPLACE):
            if self.out.exists():
                raise FileExistsError(errno.EEXIST, "appeared while privloc was working", str(self.out))
            os.rename(self.staging, self.out)

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self._finish()
        finally:
            if self.staging.exists():
                shutil.rmtree(self.staging, ignore_errors=True)
            self.lock.unlink(missing_ok=True)


def _protected(out: Path) -> str | None:
    if out == Path(out.anchor):
        return "the root of the file system"
    if _is_within(Path.cwd().resolve(), out):
        return "the working directory" if out == Path.cwd().resolve() else "a folder that holds the working directory"
    home = Path.home().resolve()
    if _is_within(home, out):
        return "your home folder" if out == home else "a folder that holds your home folder"
    return None


def claim(path: str, overwrite: bool, command: str, inputs: dict[str, str | None] | None = None) -> Claim:
    """Check `--out path` against every rule above and return the claim (not yet taken: enter it)."""
    given = Path(path).expanduser()
    if given.is_symlink():
        raise InputError(f"--out {path} is a symbolic link: give the folder itself")
    out = given.resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {path} is a file: give a folder to write the output into")
    reason = _protected(out)
    if reason:
        raise InputError(f"--out {path} is {reason}: privloc writes its output into a folder of its own")
    for role, value in (inputs or {}).items():
        if value is None or not Path(value).expanduser().exists():
            continue  # a built-in corpus or hub name
        source = Path(value).expanduser().resolve()
        if _is_within(source, out):
            what = "is" if source == out else "holds"
            raise InputError(f"--out {path} {what} the {role} of this run ({value}): choose another --out")
    if not out.parent.is_dir():
        raise InputError(f"cannot create {path}: its parent folder {out.parent} does not exist")
    if out.exists():
        if not written_by_privloc(out):
            raise InputError(f"{path} exists and privloc did not write it: choose another --out (privloc never "
                             "replaces a folder it did not write)")
        if not overwrite:
            raise InputError(f"{path} holds an earlier privloc output: choose another --out, or pass --overwrite "
                             "to replace it")
        if not os.access(out, os.W_OK):
            raise InputError(f"cannot replace {path}: the folder is not writable")
    return Claim(out, command)
