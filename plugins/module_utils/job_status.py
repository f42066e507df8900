# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status file: what each job did last, so a failed cron run is visible.

``/var/run/cepcomunicacion-backup-status.json`` (configurable) is one JSON
document, rewritten atomically under an flock on ``<file>.lock`` so jobs that
finish at the same time do not lose each other's entries::

    {"version": 1, "updated": "...",
     "jobs": {"database": {"last_run": "...", "result": "ok", "exit_code": 0, "artifact": "...",
                           "size": 123, "duration": 4.2, "error": null, "last_success": "..."}},
     "check": {...}}           # written by backup_check

Every backup job records success and failure through :func:`recording`.  While it runs, its entry says
``"result": "running"`` with its ``pid``; an entry left ``running`` by a process that no longer exists
is a job that was killed, which backup_check reports.  The
file never holds a secret: errors are the core's messages, which are redacted.
"""

from __future__ import annotations

import fcntl
import json
import os

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

DEFAULT_STATUS_FILE = '/var/run/cepcomunicacion-backup-status.json'
SCHEMA_VERSION = 1
EXIT_OK, EXIT_WARNING, EXIT_FAILURE = 0, 1, 2


def load(path):
    """The status document, or an empty one when the file does not exist (or is unreadable JSON)."""
    try:
        with open(path, 'r') as handle:
            document = json.load(handle)
        if isinstance(document, dict):
            document.setdefault('jobs', {})
            return document
    except (IOError, OSError, ValueError):
        pass
    return {'version': SCHEMA_VERSION, 'jobs': {}}


def update(path, change):
    """Apply ``change(document)`` to the status file atomically; returns the new document."""
    directory = os.path.dirname(path) or '.'
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=layout.DIR_MODE, exist_ok=True)
    lock_fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT, layout.FILE_MODE)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        document = load(path)
        change(document)
        document['version'] = SCHEMA_VERSION
        document['updated'] = layout.utcnow().isoformat()
        artifact_io.write_json_atomic(path, document)
        return document
    finally:
        os.close(lock_fd)


def record_start(path, job, started=None):
    """Record that a job is running (its PID): a run killed before it can record its outcome stays visible."""
    now = started or layout.utcnow()

    def change(document):
        entry = document['jobs'].get(job, {})
        entry.update({'result': 'running', 'pid': os.getpid(), 'started': now.isoformat()})
        document['jobs'][job] = entry
    return update(path, change)


def record_job(path, job, result=None, error=None, started=None):
    """Record one job's outcome (``result`` dict on success, ``error`` on failure)."""
    now = layout.utcnow()

    def change(document):
        entry = document['jobs'].get(job, {})
        entry.pop('pid', None)
        entry.pop('started', None)
        entry.update({'last_run': (started or now).isoformat(), 'finished': now.isoformat()})
        if error is None:
            result_ = result or {}
            artifact = result_.get('path') or result_.get('snapshot')
            entry.update({
                'result': 'ok', 'exit_code': EXIT_OK, 'error': None, 'last_success': now.isoformat(),
                'changed': bool(result_.get('changed')), 'duration': result_.get('duration'),
            })
            if artifact:
                entry.update({'artifact': artifact, 'size': result_.get('size', result_.get('bytes_total'))})
        else:
            entry.update({'result': 'failed', 'exit_code': EXIT_FAILURE, 'error': str(error),
                          'reason': getattr(error, 'details', {}).get('reason')})
        document['jobs'][job] = entry
    return update(path, change)


class recording:  # pylint: disable=invalid-name
    """Context manager: ``with recording(path, 'database') as rec: rec.result = job.run()``.

    On entry the job is recorded as ``running`` with its PID (so a run that is
    killed is seen by backup_check); success or failure is written on exit.  A
    failure to write the status file never hides the job's own outcome (it is
    reported in ``rec.status_error``).  ``path=None`` disables recording (check mode).
    """

    def __init__(self, path, job):
        self.path = path
        self.job = job
        self.result = None
        self.status_error = None
        self.started = layout.utcnow()

    def __enter__(self):
        if self.path:
            try:
                record_start(self.path, self.job, self.started)
            except (OSError, IOError, BackupError) as status_exc:
                self.status_error = 'cannot update the status file %s: %s' % (self.path, status_exc)
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.path:
            return False
        if exc_type is not None and not issubclass(exc_type, Exception):
            error = BackupError('interrupted (%s)' % exc_type.__name__)
        else:
            error = exc
        try:
            record_job(self.path, self.job, result=self.result, error=error, started=self.started)
        except (OSError, IOError, BackupError) as status_exc:
            self.status_error = 'cannot update the status file %s: %s' % (self.path, status_exc)
        return False


def record_check(path, check):
    """Replace the ``check`` section (written by backup_check) atomically; returns the new document."""

    def change(document):
        document['check'] = check
    return update(path, change)
