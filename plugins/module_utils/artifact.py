# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic, checksummed artifacts.

An artifact is written under a temporary name in its final directory while its
SHA-256 is computed from the same bytes (never re-read to hash).  Commit
order makes the rename of the data file the single commit point:

1. data fsynced under ``.tmp-<name>.<pid>``;
2. ``<name>.sha256`` (``sha256sum -c`` format) and ``<name>.meta.json``
   written atomically (temporary name, fsync, rename);
3. data renamed to ``<name>``, directory fsynced.

A crash before step 3 leaves only temporaries and sidecars without data,
which :func:`cleanup_directory` removes on the next run; a crash after it
leaves a finished artifact.  A finished-looking partial cannot exist.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout

CHUNK_SIZE = 1024 * 1024


def human_size(size):
    value = float(size)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(value) < 1024 or unit == 'TiB':
            return '%.1f %s' % (value, unit) if unit != 'B' else '%d B' % size
        value /= 1024.0
    return '%d B' % size


def ensure_directory(path, mode=layout.DIR_MODE):
    """Create ``path`` (and parents) with ``mode``; tighten an existing one to ``mode``."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        if (os.stat(path).st_mode & 0o777) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise BackupError('cannot create directory %s: %s' % (path, exc.strerror or exc), path=path)
    return path


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _space_error(path, exc, written=None):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = ' after %s' % human_size(written) if written is not None else ''
        return BackupError(
            'no space left on the backup filesystem writing %s%s; free space there '
            '(or lower retention) and run again. Earlier backups are untouched.' % (path, where),
            path=path, reason='no_space')
    return BackupError('cannot write %s: %s' % (path, exc.strerror or exc), path=path)


def write_all(fd, data):
    """os.write until every byte of ``data`` is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file_atomic(path, data, mode=layout.FILE_MODE):
    """Write bytes (or text) to ``path`` atomically: temporary name, fsync, rename."""
    if isinstance(data, str):
        data = data.encode('utf-8')
    directory, name = os.path.split(path)
    temp = os.path.join(directory, '%s%s.%d' % (layout.TEMP_MARK, name, os.getpid()))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(temp, mode)
        os.rename(temp, path)
        fsync_directory(directory or '.')
    except OSError as exc:
        _unlink_quietly(temp)
        raise _space_error(path, exc)
    return path


def write_json_atomic(path, document, mode=layout.FILE_MODE):
    return write_file_atomic(path, json.dumps(document, indent=2, sort_keys=True, default=str) + '\n', mode)


def sha256_line(digest, name):
    """One line in ``sha256sum -c`` format (text mode: two spaces)."""
    return '%s  %s\n' % (digest, name)


def read_sha256_sidecar(path):
    """Return the hex digest recorded in ``<path>.sha256``, or None when it is missing."""
    sidecar = path + layout.SHA256_SUFFIX
    try:
        with open(sidecar, 'r') as handle:
            first = handle.readline().split()
    except (IOError, OSError):
        return None
    if len(first) != 2 or len(first[0]) != 64:
        raise BackupError('checksum sidecar %s is malformed; expected "<sha256>  <name>"' % sidecar,
                          path=sidecar)
    return first[0].lower()


def read_metadata(path):
    try:
        with open(path + layout.META_SUFFIX, 'r') as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def sha256_file(path):
    """Stream a file through SHA-256 (hashlib, no second buffer copy)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    size = 0
    with open(path, 'rb', buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class ArtifactWriter:
    """Write one file artifact atomically, hashing in the same pass.

    Use as a context manager; anything but a successful :meth:`commit` removes
    the temporary file.
    """

    def __init__(self, path, mode=layout.FILE_MODE):
        self.path = path
        self.directory, self.name = os.path.split(path)
        self.temp_path = os.path.join(self.directory, '%s%s.%d' % (layout.TEMP_MARK, self.name, os.getpid()))
        self.mode = mode
        self.size = 0
        self._digest = hashlib.sha256()
        self._fd = None
        self.committed = False

    def __enter__(self):
        try:
            self._fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        except OSError as exc:
            raise _space_error(self.temp_path, exc)
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.committed:
            self.abort()
        return False

    def write(self, data):
        self._digest.update(data)
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise _space_error(self.path, exc, self.size)
        self.size += len(data)

    def copy_from_fd(self, fd, chunk_size=CHUNK_SIZE):
        """Copy everything readable from a file descriptor (a pipe) into the artifact."""
        while True:
            data = os.read(fd, chunk_size)
            if not data:
                return self.size
            self.write(data)

    @property
    def sha256(self):
        return self._digest.hexdigest()

    def head(self, count):
        with open(self.temp_path, 'rb') as handle:
            return handle.read(count)

    def abort(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        _unlink_quietly(self.temp_path)

    def commit(self, metadata):
        """Fsync, write sidecars, rename into place.  Returns the metadata written."""
        digest = self.sha256
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.chmod(self.temp_path, self.mode)
        except OSError as exc:
            raise _space_error(self.path, exc, self.size)
        document = dict(metadata)
        document.update({'name': self.name, 'sha256': digest, 'size': self.size})
        sha_path, meta_path = layout.sidecar_paths(self.path)
        stash = _stash_existing(self.path)
        try:
            write_file_atomic(sha_path, sha256_line(digest, self.name), self.mode)
            write_json_atomic(meta_path, document, self.mode)
            os.rename(self.temp_path, self.path)
            fsync_directory(self.directory)
        except (OSError, BackupError) as exc:
            _unstash(self.path, stash)
            if isinstance(exc, BackupError):
                raise
            raise _space_error(self.path, exc, self.size)
        self.committed = True
        _drop_stash(stash)
        return document


def _stash_dir(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, '%sreplaced-%s' % (layout.TEMP_MARK, name))


def _stash_existing(path):
    """Move an artifact that is about to be replaced aside, so a crash can put it back."""
    if not os.path.exists(path):
        return None
    stash = _stash_dir(path)
    os.makedirs(stash, mode=layout.DIR_MODE, exist_ok=True)
    for member in (path,) + layout.sidecar_paths(path):
        if os.path.exists(member):
            os.rename(member, os.path.join(stash, os.path.basename(member)))
    fsync_directory(os.path.dirname(path))
    return stash


def _unstash(path, stash):
    if not stash or not os.path.isdir(stash):
        return
    directory = os.path.dirname(path)
    for member in os.listdir(stash):
        os.rename(os.path.join(stash, member), os.path.join(directory, member))
    os.rmdir(stash)


def _drop_stash(stash):
    if stash and os.path.isdir(stash):
        shutil.rmtree(stash, ignore_errors=True)


def _owner_alive(name):
    """Temporaries end in '.<pid>'; is that process still running?"""
    pid = name.rsplit('.', 1)[-1]
    return pid.isdigit() and job_lock.pid_alive(int(pid))


def cleanup_directory(directory):
    """Remove what an interrupted run left in ``directory``; call it under the job lock.

    Temporaries are removed; a replaced artifact whose replacement never
    committed is put back; a sidecar whose data file does not exist is removed
    (its data never committed).  Returns the names removed or restored.
    """
    cleaned = []
    if not os.path.isdir(directory):
        return cleaned
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith(layout.TEMP_MARK + 'replaced-'):
            final = os.path.join(directory, name[len(layout.TEMP_MARK + 'replaced-'):])
            if os.path.exists(final):
                _drop_stash(path)
            else:
                _unstash(final, path)
            cleaned.append(name)
        elif layout.is_temporary(name):
            if _owner_alive(name):
                continue  # this run's own temporary (or a live process's): not a leftover
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _unlink_quietly(path)
            cleaned.append(name)
    for name in sorted(os.listdir(directory)):
        for suffix in (layout.SHA256_SUFFIX, layout.META_SUFFIX):
            if name.endswith(suffix):
                data = os.path.join(directory, name[:-len(suffix)])
                if not os.path.exists(data):
                    _unlink_quietly(os.path.join(directory, name))
                    cleaned.append(name)
    return cleaned


def remove_artifact(path):
    """Delete an artifact and its sidecars; data first, so a crash leaves no finished-looking rest."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    for sidecar in layout.sidecar_paths(path):
        _unlink_quietly(sidecar)


def free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
