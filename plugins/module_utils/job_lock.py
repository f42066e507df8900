# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One job at a time per kind: an flock on ``<backup_root>/.locks/<kind>.lock``.

The kernel releases an flock when its holder dies, so a lock file left by a
killed run never blocks the next one.  The holder writes its PID and start
time into the file so that a waiter that gives up can say who holds it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout


def lock_path(backup_root, kind):
    return os.path.join(backup_root, layout.LOCK_DIR, '%s.lock' % kind)


def read_holder(path):
    """What the last holder wrote: {'pid', 'started', 'job'} or {}."""
    try:
        with open(path, 'r') as handle:
            return json.loads(handle.read() or '{}')
    except (IOError, OSError, ValueError):
        return {}


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as exc:
        return getattr(exc, 'errno', None) == 1  # EPERM: alive, not ours
    return True


class AlreadyHeld:
    """Stands in for a JobLock when the caller already holds it (a restore taking its safety dump)."""

    waited = 0.0
    stale = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return False


class JobLock:
    """Context manager holding the lock of one job kind.

    ``timeout`` is the bounded wait in seconds (0: fail at once).  ``stale``
    is set when the previous holder recorded in the file is no longer alive.
    """

    def __init__(self, backup_root, kind, timeout=300, poll_interval=0.2, job=None):
        self.path = lock_path(backup_root, kind)
        self.kind = kind
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.job = job or kind
        self.waited = 0.0
        self.stale = None
        self._fd = None

    def __enter__(self):
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=layout.DIR_MODE, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, layout.FILE_MODE)
        except OSError as exc:
            raise BackupError('cannot open the lock file %s: %s' % (self.path, exc.strerror or exc), path=self.path)
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                self.waited = time.monotonic() - started
                if self.waited >= self.timeout:
                    holder = read_holder(self.path)
                    os.close(self._fd)
                    self._fd = None
                    raise BackupError(
                        'another %s job holds the lock %s (PID %s, running since %s); waited %d s. '
                        'Let it finish, or raise lock_timeout.' % (
                            self.kind, self.path, holder.get('pid', 'unknown'),
                            holder.get('started', 'unknown'), int(self.waited)),
                        path=self.path, holder_pid=holder.get('pid'), reason='locked')
                time.sleep(self.poll_interval)
        self.waited = time.monotonic() - started
        previous = read_holder(self.path)
        if previous.get('pid') and not pid_alive(previous['pid']):
            self.stale = previous
        record = json.dumps({
            'pid': os.getpid(),
            'job': self.job,
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }).encode('utf-8')
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, record, 0)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False

    def release(self):
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
