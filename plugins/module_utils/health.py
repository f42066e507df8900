# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks of a backup root: are the backups there, fresh, whole, restorable, and is there room?

Each check turns evidence into *findings*: ``ok``, ``warning`` or
``critical``, each with a message that names the evidence and the next step.
:func:`run_check` is the one entry point of both front ends (the
``backup_check`` module and the scheduled ``cepcomunicacion-backup check``
command): it runs the checks, alerts (with de-duplication, see :mod:`alerts`),
records the outcome in the status file's ``check`` section, writes the
Prometheus textfile (see :mod:`metrics`), and returns a result whose
``exit_code`` is 0 (ok), 1 (warning) or 2 (critical).

The checks only read, except the optional restore test, which restores the
newest dump into a scratch database (through :class:`DatabaseRestore`, under
the database job lock) and drops it again.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import socket
import statistics
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import alerts
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_backup
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_restore
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import metrics
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres

OK, WARNING, CRITICAL = 'ok', 'warning', 'critical'
SEVERITIES = (OK, WARNING, CRITICAL)
RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
EXIT_CODES = {OK: job_status.EXIT_OK, WARNING: job_status.EXIT_WARNING, CRITICAL: job_status.EXIT_FAILURE}

BACKUP_KINDS = ('database', 'database_weekly', 'media', 'config')
OFFSITE_JOB = 'offsite'
CHECK_LOCK_KIND = 'check'
DEFAULT_MAX_AGE_HOURS = {'database': 24.0, 'database_weekly': 192.0, 'media': 24.0, 'config': 24.0,
                         'offsite': 26.0}
DEFAULT_MIN_SIZE = {'database': 65536, 'database_weekly': 65536, 'media': 1, 'config': 512}
LABELS = {'database': 'daily database dump', 'database_weekly': 'weekly database dump',
          'media': 'media snapshot', 'config': 'configuration archive', 'offsite': 'offsite copy'}
JOB_NAMES = {'database': 'pg_backup (kind: daily)', 'database_weekly': 'pg_backup (kind: weekly)',
             'media': 'media_backup', 'config': 'config_backup', 'offsite': 'offsite_sync'}
LOCK_SUBJECT_JOBS = {'database': ('database', 'database_weekly')}
FUTURE_SKEW = datetime.timedelta(minutes=5)  # retention.Policy's default clock_skew


class Finding:
    """One check's verdict on one subject (a kind, a job, the disk ...)."""

    def __init__(self, check, subject, severity, title, message, next_step=None, evidence=None):
        if severity not in SEVERITIES:
            raise ValueError('severity must be one of %s' % ', '.join(SEVERITIES))
        self.check = check
        self.subject = subject
        self.severity = severity
        self.title = title
        self.message = message
        self.next_step = next_step
        self.evidence = evidence or {}

    @property
    def key(self):
        return '%s:%s' % (self.check, self.subject)

    def to_dict(self):
        return {'key': self.key, 'check': self.check, 'subject': self.subject, 'severity': self.severity,
                'title': self.title, 'message': self.message, 'next_step': self.next_step,
                'evidence': self.evidence}


def worst(findings):
    """The worst severity among findings (dicts or Finding objects); ``ok`` for none."""
    level = OK
    for finding in findings:
        severity = finding['severity'] if isinstance(finding, dict) else finding.severity
        if RANK[severity] > RANK[level]:
            level = severity
    return level


def exit_code(findings):
    """0 when every finding is ok, 1 when the worst is a warning, 2 when one is critical."""
    return EXIT_CODES[worst(findings)]


def _hours(seconds):
    return '%.1f h' % (seconds / 3600.0)


def _age_text(seconds):
    return _hours(seconds) if seconds < 72 * 3600 else '%.1f days' % (seconds / 86400.0)


def _parse(moment):
    try:
        return layout.parse_time(moment) if moment else None
    except ValueError:
        return None


def _option(options, name, default, cast):
    value = options.get(name)
    if value is None:
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise BackupError('%s must be a number, not %r' % (name, value))


class Settings:
    """Everything a check run needs; built from the module's parameters or the server's config file.

    ``options`` uses the module's option names (see ``backup_check``), so both front ends share it.
    """

    def __init__(self, options):
        get = options.get
        self.backup_root = get('backup_root') or layout.DEFAULT_BACKUP_ROOT
        self.status_file = get('status_file') or job_status.DEFAULT_STATUS_FILE
        self.kinds = list(get('kinds') or BACKUP_KINDS)
        for kind in self.kinds:
            if kind not in BACKUP_KINDS:
                raise BackupError('unknown backup kind %r to check; choose from %s' % (kind, ', '.join(BACKUP_KINDS)))
        self.prefix = get('prefix') or layout.DEFAULT_PREFIX
        self.max_age_hours = self._merge(DEFAULT_MAX_AGE_HOURS, get('max_age_hours'), 'max_age_hours', float)
        self.min_size = self._merge(DEFAULT_MIN_SIZE, get('min_size'), 'min_size', int)
        self.shrink_ratio = _option(options, 'shrink_ratio', 0.5, float)
        self.shrink_window = _option(options, 'shrink_window', 7, int)
        self.deep = bool(get('deep'))
        self.verify_workers = _option(options, 'verify_workers', min(4, os.cpu_count() or 1), int)
        self.disk_warning_percent = _option(options, 'disk_warning_percent', 80, float)
        self.disk_critical_percent = _option(options, 'disk_critical_percent', 90, float)
        self.free_space_margin = _option(options, 'free_space_margin', 1.2, float)
        self.stuck_lock_hours = _option(options, 'stuck_lock_hours', 6, float)
        self.stuck_lock_factor = _option(options, 'stuck_lock_factor', 4, float)
        self.offsite = bool(get('offsite'))
        self.restore_test = bool(get('restore_test'))
        self.restore_sanity_sql = list(get('restore_sanity_sql') or [])
        self.restore_min_rows = dict(get('restore_min_rows') or {})
        self.database = get('database') or layout.DEFAULT_PREFIX
        self.lock_timeout = _option(options, 'lock_timeout', 60, int)
        self.host_label = get('host_label') or socket.getfqdn()
        self.metrics_file = get('metrics_file')
        self.connection_options = options
        if self.disk_warning_percent > self.disk_critical_percent:
            raise BackupError('disk_warning_percent (%s) must not be above disk_critical_percent (%s)' % (
                self.disk_warning_percent, self.disk_critical_percent))
        for table, minimum in self.restore_min_rows.items():
            try:
                int(minimum)
            except (TypeError, ValueError):
                raise BackupError('restore_min_rows[%r] must be a whole number of rows, not %r' % (table, minimum))
        self.alerts = alerts.Settings(options)

    @staticmethod
    def _merge(defaults, given, name, cast):
        merged = dict(defaults)
        for key, value in (given or {}).items():
            if key not in defaults:
                raise BackupError('%s has no entry %r; use %s' % (name, key, ', '.join(sorted(defaults))))
            if value is not None:
                try:
                    merged[key] = cast(value)
                except (TypeError, ValueError):
                    raise BackupError('%s.%s must be a number, not %r' % (name, key, value))
        return merged

    def connection(self):
        return postgres.Connection.from_module_params(self.connection_options, database=self.database)


# --- the restore test ---------------------------------------------------------------------------

class RestoreTest(database_restore.DatabaseRestore):
    """Restore the newest dump into a scratch database, check it, drop it; never touch the live database.

    The same scratch-database path as a real restore (``restore_scratch``: roles, ``pg_restore -j``,
    every table counted, sanity SQL), without the swap.  Runs under the database job lock so it
    never races a backup, and drops leftovers of an interrupted test first.
    """

    def __init__(self, connection, backup_root, min_rows=None, **kwargs):
        kwargs.setdefault('verify', False)  # the checksum check hashes the dump; a restore test restores it anyway
        super().__init__(connection, backup_root=backup_root, mode='full', pre_restore_dump=False, **kwargs)
        self.min_rows = dict(min_rows or {})

    def test(self):
        started = time.monotonic()
        result = {'result': 'failed', 'backup': None, 'tables': 0, 'row_counts': {}}
        try:
            admin = self._admin()
            try:
                self.server_version = self.connection.server_version_num(admin)
            finally:
                admin.close()
            item = self.choose()
            result['backup'] = item.path
            with job_lock.JobLock(self.backup_root, database_backup.LOCK_KIND, timeout=self.lock_timeout,
                                  job='restore_test'):
                self._drop_leftovers()
                with postgres.PrivateDir() as private_dir:
                    env = self.connection.client_environment(private_dir)
                    archive = self._archive_input(item)
                    try:
                        tables, counts = self.restore_scratch(archive, env, self.connection.user)
                    finally:
                        self._drop(self.scratch)
                        if archive != item.path and os.path.exists(archive):
                            os.unlink(archive)
            result['tables'] = len(tables)
            short = dict((name, counts.get(name if '.' in name else 'public.' + name)) for name in self.min_rows)
            result['row_counts'] = short
            low = ['%s has %s rows (minimum %s)' % (name, count, self.min_rows[name])
                   for name, count in sorted(short.items()) if count is None or count < int(self.min_rows[name])]
            if low:
                raise BackupError('the restored copy has too few rows: %s' % '; '.join(low), reason='row_counts')
            result['result'] = 'ok'
        except BackupError as exc:
            result['error'] = str(exc)
            result['reason'] = exc.details.get('reason')
        result['duration'] = round(time.monotonic() - started, 3)
        result['finished'] = layout.utcnow().isoformat()
        return result


# --- the checks ---------------------------------------------------------------------------------

class HealthCheck:
    """Runs the checks over one backup root and the status file; collects findings."""

    def __init__(self, settings, status=None, now=None, log=None):
        self.settings = settings
        self.status = status if status is not None else job_status.load(settings.status_file)
        self.now = now or layout.utcnow()
        self.log = log or (lambda message: None)
        self.findings = []
        self.kinds = {}
        self.disk = {}
        self.restore = None
        self.artifacts = {}
        self.future = {}

    def add(self, check, subject, severity, title, message, next_step=None, **evidence):
        text = message if not next_step else '%s Next step: %s' % (message, next_step)
        self.findings.append(Finding(check, subject, severity, title, text, next_step, evidence))

    def run(self, restore_test=None):
        listed = catalogue.list_artifacts(self.settings.backup_root, list(self.settings.kinds), self.settings.prefix)
        horizon = self.now + FUTURE_SKEW
        for kind in self.settings.kinds:
            mine = [item for item in listed if item.kind == kind]
            current = [item for item in mine if item.created <= horizon]
            # like retention: an artifact dated in the future never counts as the newest (it would hide staleness)
            self.future[kind] = [item for item in mine if item.created > horizon]
            self.artifacts[kind] = current or mine
        for kind in self.settings.kinds:
            self.check_future(kind)
            self.check_freshness(kind)
            self.check_size(kind)
        if self.settings.offsite:
            self.check_offsite()
        self.check_checksums()
        self.check_disk()
        self.check_jobs()
        self.check_locks()
        if restore_test if restore_test is not None else self.settings.restore_test:
            self.check_restore()
        return self.findings

    # freshness --------------------------------------------------------------------------------

    def check_future(self, kind):
        future = self.future.get(kind)
        if not future:
            return
        label = LABELS[kind]
        ahead = (future[-1].created - self.now).total_seconds()
        self.add('clock', kind, WARNING, '%s dated in the future' % label,
                 '%d %s%s dated in the future, the latest %s (%s, %s ahead of this server\'s clock); retention keeps '
                 'them and the checks do not count them as the newest.' % (
                     len(future), label, 's are' if len(future) > 1 else ' is', future[-1].name,
                     future[-1].created.isoformat(), _age_text(ahead)),
                 'check the server clock (timedatectl, NTP) and where these came from; remove them once a correct '
                 'backup exists.', paths=[item.path for item in future])

    def check_freshness(self, kind):
        items = self.artifacts[kind]
        limit = self.settings.max_age_hours[kind]
        label = LABELS[kind]
        directory = layout.KINDS[kind].directory(self.settings.backup_root)
        summary = {'count': len(items), 'newest': None, 'created': None, 'age_seconds': None, 'size': None,
                   'duration': None, 'max_age_hours': limit}
        self.kinds[kind] = summary
        if not items:
            self.add('freshness', kind, CRITICAL, 'no %s' % label,
                     'no complete %s exists in %s.' % (label, directory),
                     'run %s (or check why the scheduled job did not) and read its log.' % JOB_NAMES[kind],
                     directory=directory)
            return
        newest = items[-1]
        age = (self.now - newest.created).total_seconds()
        summary.update(newest=newest.path, created=newest.created.isoformat(), age_seconds=round(age, 1),
                       size=newest.size, duration=(newest.metadata or {}).get('duration'))
        if age > limit * 3600:
            self.add('freshness', kind, CRITICAL, 'stale %s' % label,
                     'the newest %s, %s, was made %s ago (%s); the limit is %s.' % (
                         label, newest.name, _age_text(age), newest.created.isoformat(), _hours(limit * 3600)),
                     'check that the scheduled %s job runs (cron, the status file, its log) and run it by hand.'
                     % JOB_NAMES[kind], path=newest.path, age_hours=round(age / 3600.0, 2), limit_hours=limit)
        else:
            self.add('freshness', kind, OK, '%s is fresh' % label, 'the newest %s, %s, is %s old (limit %s).' % (
                label, newest.name, _age_text(max(age, 0)), _hours(limit * 3600)),
                path=newest.path, age_hours=round(age / 3600.0, 2), limit_hours=limit)

    def check_offsite(self):
        entry = self.status.get('jobs', {}).get(OFFSITE_JOB) or {}
        limit = self.settings.max_age_hours['offsite']
        last = _parse(entry.get('last_success'))
        self.kinds['offsite'] = {'last_success': last.isoformat() if last else None, 'max_age_hours': limit,
                                 'age_seconds': round((self.now - last).total_seconds(), 1) if last else None,
                                 'size': entry.get('size'), 'duration': entry.get('duration')}
        if last is None:
            self.add('freshness', 'offsite', CRITICAL, 'no offsite copy',
                     'offsite copies are enabled but the status file %s records no successful offsite copy%s.' % (
                         self.settings.status_file,
                         ' (the last attempt failed: %s)' % entry.get('error') if entry.get('error') else ''),
                     'run offsite_sync (mode: push) and check its log and the bucket\'s credentials.',
                     status_file=self.settings.status_file)
            return
        age = (self.now - last).total_seconds()
        if age > limit * 3600:
            self.add('freshness', 'offsite', CRITICAL, 'stale offsite copy',
                     'the last successful offsite copy finished %s ago (%s); the limit is %s.' % (
                         _age_text(age), last.isoformat(), _hours(limit * 3600)),
                     'run offsite_sync (mode: push) by hand and read its log.',
                     age_hours=round(age / 3600.0, 2), limit_hours=limit)
        else:
            self.add('freshness', 'offsite', OK, 'offsite copy is fresh',
                     'the last offsite copy finished %s ago (limit %s).' % (_age_text(max(age, 0)),
                                                                            _hours(limit * 3600)),
                     age_hours=round(age / 3600.0, 2), limit_hours=limit)

    # size --------------------------------------------------------------------------------------

    def check_size(self, kind):
        items = [item for item in self.artifacts[kind] if item.size is not None]
        if not items:
            return
        newest = items[-1]
        label = LABELS[kind]
        minimum = self.settings.min_size[kind]
        if newest.size < minimum:
            self.add('size', kind, CRITICAL, 'tiny %s' % label,
                     'the newest %s, %s, is %s (%d bytes), below the minimum of %s.' % (
                         label, newest.name, artifact_io.human_size(newest.size), newest.size,
                         artifact_io.human_size(minimum)),
                     'the backup is probably empty or cut short: read the %s log, run it again, and restore-test '
                     'it before relying on it.' % JOB_NAMES[kind], path=newest.path, size=newest.size, minimum=minimum)
        else:
            self.add('size', kind, OK, '%s size' % label, 'the newest %s is %s (minimum %s).' % (
                label, artifact_io.human_size(newest.size), artifact_io.human_size(minimum)),
                path=newest.path, size=newest.size, minimum=minimum)
        previous = [item.size for item in items[:-1]][-self.settings.shrink_window:]
        if len(previous) < 3 or not self.settings.shrink_ratio:
            return
        median = statistics.median(previous)
        if newest.size < self.settings.shrink_ratio * median:
            self.add('shrink', kind, WARNING, '%s shrank suddenly' % label,
                     'the newest %s, %s, is %s: less than %d%% of the median of the previous %d (%s).' % (
                         label, newest.name, artifact_io.human_size(newest.size), round(self.settings.shrink_ratio * 100),
                         len(previous), artifact_io.human_size(median)),
                     'find out whether data was deleted at the source (compare row counts or file counts with '
                     'the previous backup) before retention prunes the good ones.',
                     path=newest.path, size=newest.size, median=median, window=len(previous))
        else:
            self.add('shrink', kind, OK, '%s size is steady' % label,
                     'the newest %s is %s; the median of the previous %d is %s.' % (
                         label, artifact_io.human_size(newest.size), len(previous), artifact_io.human_size(median)),
                     size=newest.size, median=median, window=len(previous))

    # checksums ----------------------------------------------------------------------------------

    def check_checksums(self):
        chosen = []
        for kind in self.settings.kinds:
            items = self.artifacts[kind]
            chosen.extend(items if self.settings.deep else items[-1:])
        results = verify_artifacts(chosen, self.settings.verify_workers)
        for kind in self.settings.kinds:
            mine = [(item, results[item.path]) for item in chosen if item.kind == kind]
            if not mine:
                continue
            bad = [(item, status) for item, (status, _actual) in mine if status != catalogue.STATUS_OK]
            self.kinds[kind]['verified'] = len(mine)
            if bad:
                described = ', '.join('%s (%s)' % (item.name, status.replace('_', ' ')) for item, status in bad)
                self.add('checksum', kind, CRITICAL, 'corrupt %s' % LABELS[kind],
                         '%d of %d %s%s checked fail verification: %s.' % (
                             len(bad), len(mine), LABELS[kind], 's' if len(mine) > 1 else '', described),
                         'do not restore from %s; take a new backup now and find what altered the files '
                         '(disk errors in dmesg, ransomware, a manual edit).' % (
                             'them' if len(bad) > 1 else 'it'),
                         failed=[item.path for item, _status in bad], verified=len(mine))
            else:
                self.add('checksum', kind, OK, '%s checksums' % LABELS[kind],
                         '%d %s%s verified against %s.' % (
                             len(mine), LABELS[kind], 's' if len(mine) > 1 else '',
                             'their manifests' if layout.KINDS[kind].is_dir else 'their .sha256 sidecars'),
                         verified=len(mine))

    # disk ---------------------------------------------------------------------------------------

    def check_disk(self):
        root = self.settings.backup_root
        try:
            stats = os.statvfs(root)
        except OSError as exc:
            self.add('disk', 'usage', CRITICAL, 'backup root unreadable',
                     'cannot read the filesystem of the backup root %s: %s.' % (root, exc.strerror or exc),
                     'check that it exists and is mounted.', path=root)
            return
        free = stats.f_bfree * stats.f_frsize
        avail = stats.f_bavail * stats.f_frsize
        used = stats.f_blocks * stats.f_frsize - free
        percent = 100.0 * used / (used + avail) if used + avail else 100.0
        self.disk = {'path': root, 'used_bytes': used, 'available_bytes': avail, 'used_percent': round(percent, 1)}
        text = 'the backup filesystem (%s) is %.1f%% full: %s used, %s available.' % (
            root, percent, artifact_io.human_size(used), artifact_io.human_size(avail))
        evidence = dict(self.disk)
        if percent >= self.settings.disk_critical_percent:
            self.add('disk', 'usage', CRITICAL, 'backup disk %d%% full' % percent,
                     text + ' The critical limit is %d%%.' % self.settings.disk_critical_percent,
                     'free space (lower retention_days, move old weekly dumps offsite) or grow the filesystem '
                     'before the next backup fails.', **evidence)
        elif percent >= self.settings.disk_warning_percent:
            self.add('disk', 'usage', WARNING, 'backup disk %d%% full' % percent,
                     text + ' The warning limit is %d%%.' % self.settings.disk_warning_percent,
                     'plan more space or shorter retention.', **evidence)
        else:
            self.add('disk', 'usage', OK, 'backup disk usage', text, **evidence)
        need, parts = self.next_backup_size()
        self.disk['next_backup_bytes'] = need
        if need and avail < need:
            self.add('disk', 'next_backup', CRITICAL, 'next backup would not fit',
                     'the next backups need about %s (%s, times the margin %.2f) and only %s is available on %s.' % (
                         artifact_io.human_size(need), ', '.join(parts), self.settings.free_space_margin,
                         artifact_io.human_size(avail), root),
                     'free space on the backup filesystem before the next scheduled run.',
                     needed_bytes=need, available_bytes=avail)
        elif need:
            self.add('disk', 'next_backup', OK, 'next backup fits',
                     'the next backups need about %s; %s is available.' % (
                         artifact_io.human_size(need), artifact_io.human_size(avail)),
                     needed_bytes=need, available_bytes=avail)

    def next_backup_size(self):
        """Bytes the next nightly run writes: the largest recent dump, the config archive, media's new space."""
        parts = []
        total = 0
        dumps = [self.artifacts[kind][-1] for kind in ('database', 'database_weekly')
                 if self.artifacts.get(kind)]
        if dumps:
            largest = max(dumps, key=lambda item: item.size or 0)
            total += largest.size or 0
            parts.append('database dump %s' % artifact_io.human_size(largest.size or 0))
        if self.artifacts.get('config'):
            size = self.artifacts['config'][-1].size or 0
            total += size
            parts.append('config archive %s' % artifact_io.human_size(size))
        if self.artifacts.get('media'):
            meta = self.artifacts['media'][-1].metadata or {}
            size = int(meta.get('new_space') or 0)
            total += size
            parts.append('media new space %s' % artifact_io.human_size(size))
        return int(total * self.settings.free_space_margin), parts

    # jobs and locks ------------------------------------------------------------------------------

    def check_jobs(self):
        for job, entry in sorted(self.status.get('jobs', {}).items()):
            if not isinstance(entry, dict):
                continue
            if entry.get('result') == 'failed':
                self.add('job', job, CRITICAL, 'last %s job failed' % job,
                         'the last %s job (started %s) failed with exit status %s: %s' % (
                             job, entry.get('last_run'), entry.get('exit_code'), entry.get('error') or 'no detail'),
                         'fix the cause named above and run the job again; until then the previous backup '
                         '(last success %s) is the newest good one.' % (entry.get('last_success') or 'never'),
                         exit_code=entry.get('exit_code'), last_run=entry.get('last_run'),
                         reason=entry.get('reason'))
            elif entry.get('result') == 'running' and not job_lock.pid_alive(entry.get('pid')):
                self.add('job', job, CRITICAL, 'last %s job died' % job,
                         'the last %s job (PID %s, started %s) ended without recording an outcome: it was killed '
                         '(SIGKILL, out of memory, a reboot) or crashed.' % (
                             job, entry.get('pid'), entry.get('started')),
                         'read its log and run it again; the next run removes its partial output. Until then the '
                         'previous backup (last success %s) is the newest good one.' % (
                             entry.get('last_success') or 'never'),
                         pid=entry.get('pid'), started=entry.get('started'), reason='died')
            elif entry.get('result') == 'running':
                self.add('job', job, OK, '%s job running' % job, 'a %s job (PID %s) has been running since %s.' % (
                    job, entry.get('pid'), entry.get('started')), pid=entry.get('pid'), started=entry.get('started'))
            else:
                self.add('job', job, OK, 'last %s job succeeded' % job,
                         'the last %s job (started %s) succeeded.' % (job, entry.get('last_run')),
                         exit_code=entry.get('exit_code'), last_run=entry.get('last_run'))

    def check_locks(self):
        directory = os.path.join(self.settings.backup_root, layout.LOCK_DIR)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return
        for name in names:
            if not name.endswith('.lock'):
                continue
            kind = name[:-len('.lock')]
            if kind == CHECK_LOCK_KIND:
                continue
            path = os.path.join(directory, name)
            holder = job_lock.read_holder(path)
            started = _parse(holder.get('started'))
            if not holder.get('pid') or started is None or not job_lock.pid_alive(holder['pid']):
                continue
            held = (self.now - started).total_seconds()
            jobs = self.status.get('jobs', {})
            usual = [jobs[job].get('duration') for job in LOCK_SUBJECT_JOBS.get(kind, (holder.get('job'), kind))
                     if isinstance(jobs.get(job), dict) and jobs[job].get('duration')]
            limit = max(self.settings.stuck_lock_hours * 3600, self.settings.stuck_lock_factor * max(usual or [0]))
            evidence = {'path': path, 'pid': holder['pid'], 'job': holder.get('job'), 'started': started.isoformat(),
                        'held_hours': round(held / 3600.0, 2), 'limit_hours': round(limit / 3600.0, 2)}
            if held > limit:
                self.add('lock', kind, WARNING, '%s job looks stuck' % kind,
                         'the %s lock %s has been held by PID %s (%s job) for %s since %s; the limit is %s%s.' % (
                             kind, path, holder['pid'], holder.get('job') or kind, _age_text(held), started.isoformat(),
                             _hours(limit), ' (%.0f× the usual %.0f s)' % (self.settings.stuck_lock_factor, max(usual))
                             if usual else ''),
                         'look at what PID %s is doing (ps, its log); if it hangs, stop it: the lock is released '
                         'when it exits and the next run cleans its leftovers.' % holder['pid'], **evidence)
            else:
                self.add('lock', kind, OK, '%s job running' % kind,
                         'a %s job (PID %s) has held the lock for %s.' % (kind, holder['pid'], _age_text(held)),
                         **evidence)

    # restore test ------------------------------------------------------------------------------

    def check_restore(self):
        tester = RestoreTest(self.settings.connection(), self.settings.backup_root,
                             min_rows=self.settings.restore_min_rows, sanity_sql=self.settings.restore_sanity_sql,
                             prefix=self.settings.prefix, lock_timeout=self.settings.lock_timeout, log=self.log,
                             now=self.now)
        self.restore = tester.test()
        if self.restore['result'] == 'ok':
            self.add('restore_test', 'database', OK, 'restore test passed',
                     'the newest dump %s restored into a scratch database in %.1f s: %d tables readable%s.' % (
                         self.restore['backup'], self.restore['duration'], self.restore['tables'],
                         ', ' + ', '.join('%s %d rows' % item for item in sorted(self.restore['row_counts'].items()))
                         if self.restore['row_counts'] else ''),
                     backup=self.restore['backup'], duration=self.restore['duration'])
        else:
            self.add('restore_test', 'database', CRITICAL, 'restore test failed',
                     'the newest dump %s does not restore: %s' % (
                         self.restore['backup'] or '(none found)', self.restore.get('error')),
                     'this dump cannot be relied on, whatever its checksum says: take a new backup, restore-test it '
                     '(backup_check restore_test: true), and keep the last dump that restores.',
                     backup=self.restore['backup'], reason=self.restore.get('reason'))


def verify_artifacts(items, workers=1):
    """``{path: (status, actual)}`` for each artifact, re-hashed by :func:`catalogue.verify` in parallel.

    hashlib releases the GIL while it hashes, so threads use every core; each file is read once.
    """
    results = {}
    if not items:
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        for item, outcome in zip(items, pool.map(_verify_one, items)):
            results[item.path] = outcome
    return results


def _verify_one(item):
    try:
        return catalogue.verify(item)
    except (OSError, BackupError) as exc:
        return 'unreadable: %s' % (getattr(exc, 'strerror', None) or exc), None


# --- one run: checks, alerts, status, metrics --------------------------------------------------

def _material(check):
    """What makes a check result different from the previous one (timestamps and ages excluded)."""
    check = check or {}
    return {
        'health': check.get('health'),
        'findings': sorted((item.get('key'), item.get('severity')) for item in check.get('findings') or []),
        'alerts': sorted((key, entry.get('severity'), tuple(sorted(entry.get('notified') or {})))
                         for key, entry in ((check.get('alerts') or {}).get('active') or {}).items()),
        'restore_test': (check.get('restore_test') or {}).get('result'),
    }


def run_check(settings, check_mode=False, log=None, now=None, channels=None):
    """Check, alert, record, export.  Returns the result both front ends report (see backup_check RETURN)."""
    log = log or (lambda message: None)
    now = now or layout.utcnow()
    started = time.monotonic()
    if not os.path.isdir(settings.backup_root):
        raise BackupError('the backup root %s does not exist (or is not a directory); set backup_root to where '
                          'the backups are' % settings.backup_root, path=settings.backup_root)
    channels = alerts.build_channels(settings.alerts) if channels is None else channels
    heartbeat = alerts.healthchecks_channel(settings.alerts)
    lock = job_lock.AlreadyHeld() if check_mode else job_lock.JobLock(
        settings.backup_root, CHECK_LOCK_KIND, timeout=settings.lock_timeout, job='check')
    with lock:
        beats = [heartbeat.start()] if heartbeat and not check_mode else []
        previous = job_status.load(settings.status_file)
        previous_check = previous.get('check') or {}
        checker = HealthCheck(settings, status=previous, now=now, log=log)
        findings = checker.run(restore_test=settings.restore_test and not check_mode)
        health = worst(findings)
        code = EXIT_CODES[health]
        notifier = alerts.Notifier(settings.alerts, channels, log=log)
        plan, active = notifier.plan(findings, (previous_check.get('alerts') or {}).get('active') or {}, now)
        deliveries = [] if check_mode else notifier.deliver(plan, active, now, settings.host_label, findings, health)
        if heartbeat and not check_mode:
            beats.append(heartbeat.finish(code, alerts.summary_text(settings.host_label, findings, health)))
        deliveries += beats
        restore = checker.restore or previous_check.get('restore_test')
        check = {
            'last_run': now.isoformat(), 'health': health, 'healthy': health == OK, 'exit_code': code,
            'duration': round(time.monotonic() - started, 3), 'host': settings.host_label,
            'findings': [finding.to_dict() for finding in findings], 'kinds': checker.kinds,
            'disk': checker.disk, 'restore_test': restore,
            'alerts': alerts.state_document(previous_check.get('alerts'), active, deliveries, now),
        }
        sent = [item for item in deliveries if item['delivered'] and item['channel'] != 'healthchecks']
        failures = [item for item in deliveries if not item['delivered']]
        changed = bool(sent) or _material(check) != _material(previous_check)
        result = {
            'changed': changed, 'healthy': health == OK, 'health': health, 'exit_code': code,
            'findings': check['findings'], 'alerts_sent': sent, 'alert_failures': failures,
            'alerts_due': alerts.describe_plan(plan), 'kinds': checker.kinds, 'disk': checker.disk,
            'restore_test': restore, 'status_file': settings.status_file, 'metrics_file': settings.metrics_file,
            'status_error': None, 'duration': check['duration'],
        }
        if check_mode:
            return result
        try:
            document = job_status.record_check(settings.status_file, check)
        except (OSError, BackupError) as exc:
            result['status_error'] = 'cannot update the status file %s: %s' % (settings.status_file, exc)
            log(result['status_error'])
            document = dict(previous, check=check)
        if settings.metrics_file:
            metrics.write(settings.metrics_file, document, now=now)
        result['duration'] = round(time.monotonic() - started, 3)
        return result


def command(options, log=None):
    """Entry point of the server-side ``check`` command: returns its exit code (0 ok, 1 warning, 2 critical).

    A check that cannot run at all (bad configuration, missing backup root) is critical too.
    """
    log = log or (lambda message: None)
    try:
        result = run_check(Settings(options), log=log)
    except BackupError as exc:
        log('backup check could not run: %s' % exc)
        return job_status.EXIT_FAILURE
    for finding in result['findings']:
        if finding['severity'] != OK:
            log('%s %s: %s' % (finding['severity'].upper(), finding['key'], finding['message']))
    return result['exit_code']
