# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Database backups: one ``pg_dump`` custom-format dump, atomic and checksummed.

The dump streams from ``pg_dump`` (through ``zstd`` when asked for on a
pg_dump older than 16) into an :class:`artifact.ArtifactWriter`, which hashes
the bytes as it writes them.  Before the artifact is committed the dump is
proven whole: pg_dump and zstd exited 0, the archive header is there,
``pg_restore --list`` reads its table of contents, and ``pg_restore`` can
reach the last data block (a truncated dump cannot).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import retention

COMPRESSIONS = ('auto', 'gzip', 'zstd', 'none')
DEFAULT_LEVELS = {'gzip': 6, 'zstd': 3, 'none': 0}
PGDMP_MAGIC = b'PGDMP'
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
# Entries with a data block in the archive (SEQUENCE SET has none: its value is in the TOC, so reading it
# proves nothing about truncation; the fault matrix found a dump cut after 100 kB accepted that way).
_DATA_ENTRY = re.compile(r'^\d+;\s+\d+\s+\d+\s+(TABLE DATA|BLOBS|BLOB|LARGE OBJECTS)\s')
DATABASE_KINDS = ('database', 'database_weekly')
ALL_DATABASE_KINDS = DATABASE_KINDS + ('database_pre_restore',)
LOCK_KIND = 'database'


def resolve_compression(compression, level, pg_dump_major):
    """(method, level, native) for the requested compression.

    ``auto`` picks gzip on pg_dump < 16 so that a plain ``pg_restore`` reads
    the dump (see docs/BENCHMARKS.md for the measurement), and zstd, native to
    the custom format, on 16 and newer.
    """
    if compression not in COMPRESSIONS:
        raise BackupError('compression must be one of %s, not %r' % (', '.join(COMPRESSIONS), compression))
    if compression == 'auto':
        compression = 'zstd' if pg_dump_major >= 16 else 'gzip'
    if level is None:
        level = DEFAULT_LEVELS[compression]
    limits = {'gzip': (0, 9), 'zstd': (1, 19), 'none': (0, 0)}[compression]
    if not limits[0] <= level <= limits[1]:
        raise BackupError('compression_level %s is out of range for %s (%d..%d)' % (level, compression, limits[0], limits[1]))
    native = compression != 'zstd' or pg_dump_major >= 16
    return compression, level, native


def _compress_args(method, level, native):
    if method == 'none' or not native:
        return ['--compress=0']
    if method == 'gzip':
        return ['--compress=%d' % level]
    return ['--compress=zstd:%d' % level]


def _tail(path, connection, limit=2000):
    try:
        with open(path, 'rb') as handle:
            text = handle.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return ''
    return connection.redact(text.strip())[-limit:]


def _run_checked(argv, env, stdin=None, timeout=None):
    proc = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,  # noqa: S603 -- argv list, no shell
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


def _archive_reader(path, zstd_bin):
    """Popen that yields the uncompressed custom-format archive on stdout, or None for a plain file."""
    if zstd_bin is None:
        return None
    return subprocess.Popen([zstd_bin, '-dcq', path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # noqa: S603 -- argv list, no shell


def prove_dump_whole(path, pg_restore, env, zstd_bin=None):
    """Raise unless ``pg_restore`` can read the TOC and reach the last data block.

    Returns the number of TABLE DATA entries.  Reaching the last block makes
    pg_restore skip over every earlier block header, so truncation anywhere is
    found without decompressing the whole dump.
    """
    def run(extra):
        reader = _archive_reader(path, zstd_bin)
        if reader is None:
            return _run_checked([pg_restore] + extra + [path], env)
        try:
            return _run_checked([pg_restore] + extra, env, stdin=reader.stdout)
        finally:
            reader.stdout.close()
            reader.wait()

    rc, listing, err = run(['--list'])
    if rc != 0:
        raise BackupError('the dump is not a readable pg_dump archive (pg_restore --list: %s)' % err.strip()[-500:],
                          reason='bad_dump')
    entries = [line for line in listing.splitlines() if _DATA_ENTRY.match(line)]
    if entries:
        directory, name = os.path.split(path)
        list_file = os.path.join(directory, '%s%s.list' % (layout.TEMP_MARK, name.lstrip('.')))
        with open(list_file, 'w') as handle:
            handle.write(entries[-1] + '\n')
        try:
            rc, _out, err = run(['--use-list=%s' % list_file, '--file=%s' % os.devnull])
        finally:
            os.unlink(list_file)
        if rc != 0:
            raise BackupError('the dump is truncated or damaged: pg_restore cannot read its last data block '
                              '(%s)' % err.strip()[-500:], reason='bad_dump')
    return sum(1 for line in entries if ' TABLE DATA ' in line)


class DatabaseBackup:
    """One run of a database backup; ``run()`` returns the result dict."""

    def __init__(self, connection, backup_root=layout.DEFAULT_BACKUP_ROOT, kind='database', compression='auto',
                 compression_level=None, retention_days=30, retention_weeks=12, lock_timeout=300, force=False,
                 prefix=layout.DEFAULT_PREFIX, free_space_margin=1.2, check_mode=False, now=None, log=None,
                 tables=None, take_lock=True):
        if kind not in ALL_DATABASE_KINDS:
            raise BackupError("kind must be 'database' (daily) or 'database_weekly', not %r" % kind)
        self.connection = connection
        self.backup_root = backup_root
        self.kind = kind
        self.spec = layout.KINDS[kind]
        self.compression = compression
        self.compression_level = compression_level
        self.policy = retention.Policy(daily_days=retention_days, weekly_weeks=retention_weeks)
        self.lock_timeout = lock_timeout
        self.force = force
        self.prefix = prefix
        self.free_space_margin = free_space_margin
        self.check_mode = check_mode
        self.now = now
        self.log = log or (lambda message: None)
        self.executed_commands = []
        # (schema, table) pairs, or 'schema.table' / 'table' (public); dumped by exact name, never as a pattern
        self.tables = [tuple(t) if isinstance(t, (tuple, list)) else (t.rpartition('.')[0] or 'public', t.rpartition('.')[2])
                       for t in (tables or [])]
        self.take_lock = take_lock

    # -- steps -------------------------------------------------------------------------------

    def _inspect_server(self):
        conn = self.connection.connect()
        try:
            version_num = self.connection.server_version_num(conn)
            with conn.cursor() as cur:
                cur.execute('SELECT version()')
                version_text = cur.fetchone()[0]
        finally:
            conn.close()
        return version_num, version_text

    def _existing_weekly(self, moment):
        label = layout.iso_week_label(moment)
        for item in catalogue.list_artifacts(self.backup_root, ['database_weekly'], self.prefix):
            if ('_weekly_%s.' % label) in item.name:
                return item
        return None

    def _check_free_space(self):
        previous = catalogue.list_artifacts(self.backup_root, list(DATABASE_KINDS), self.prefix)
        if not previous:
            return None
        last = max(previous, key=lambda item: item.created)
        needed = int((last.size or 0) * self.free_space_margin)
        directory = self.spec.directory(self.backup_root)
        free = artifact_io.free_bytes(directory if os.path.isdir(directory) else self.backup_root)
        if free < needed:
            raise BackupError(
                'only %s free on the filesystem of %s; the last dump (%s) was %s and a margin of %.1fx '
                'needs %s. Free space or lower retention; nothing was written.' % (
                    artifact_io.human_size(free), self.backup_root, last.name, artifact_io.human_size(last.size or 0),
                    self.free_space_margin, artifact_io.human_size(needed)),
                reason='no_space', free=free, needed=needed)
        return free

    def _plan_retention(self, extra=None):
        return catalogue.plan_retention(self.backup_root, self.kind, self.policy, self.now, self.prefix, extra)

    def _dump(self, path, pg_dump, pg_major, private_dir, metadata):
        method, level, native = resolve_compression(self.compression, self.compression_level, pg_major)
        env = self.connection.client_environment(private_dir)
        argv = [pg_dump, '--format=custom', '--no-password'] + _compress_args(method, level, native) + [
            '--host=%s' % self.connection.host, '--port=%d' % self.connection.port,
            '--username=%s' % self.connection.user, postgres.dbname_option(self.connection.database)] + [
            '--table=%s' % postgres.table_pattern(schema, table) for schema, table in self.tables]
        zstd_bin = None
        zstd_argv = None
        if method == 'zstd' and not native:
            zstd_bin = _which_required('zstd', 'apt install zstd')
            zstd_argv = [zstd_bin, '-q', '-c', '-%d' % level]
        command = shlex.join(argv) + (' | ' + shlex.join(zstd_argv) if zstd_argv else '')
        self.executed_commands.append(command)
        metadata.update({'compression': method, 'compression_level': level,
                         'compression_native': native, 'format': 'custom'})
        dump_err = os.path.join(private_dir, 'pg_dump.err')
        zstd_err = os.path.join(private_dir, 'zstd.err')
        started = time.monotonic()
        with open(dump_err, 'wb') as err1, open(zstd_err, 'wb') as err2, artifact_io.ArtifactWriter(path) as writer:
            dump = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err1, env=env)  # noqa: S603 -- argv list, no shell
            procs = [dump]
            source = dump.stdout
            if zstd_argv:
                comp = subprocess.Popen(zstd_argv, stdin=dump.stdout, stdout=subprocess.PIPE, stderr=err2)  # noqa: S603 -- argv list, no shell
                dump.stdout.close()
                procs.append(comp)
                source = comp.stdout
            try:
                writer.copy_from_fd(source.fileno())
            except BaseException:
                for proc in procs:
                    proc.kill()
                for proc in procs:
                    proc.wait()
                raise
            finally:
                source.close()
            codes = [proc.wait() for proc in procs]
            if codes[0] != 0:
                raise self.connection_failure(_tail(dump_err, self.connection), codes[0])
            if len(codes) > 1 and codes[1] != 0:
                raise BackupError('zstd failed (exit %d): %s' % (codes[1], _tail(zstd_err, self.connection)))
            magic = ZSTD_MAGIC if zstd_argv else PGDMP_MAGIC
            if writer.size < 64 or writer.head(len(magic)) != magic:
                raise BackupError('pg_dump exited 0 but wrote %s, which is not a pg_dump archive; '
                                  'nothing was kept' % artifact_io.human_size(writer.size), reason='bad_dump')
            pg_restore, _ver, _text = postgres.find_client('pg_restore', None, self.connection.pg_bin_dir)
            tables = prove_dump_whole(writer.temp_path, pg_restore, env, zstd_bin)
            warnings = _tail(dump_err, self.connection)
            metadata.update({'tables': tables, 'duration': round(time.monotonic() - started, 3)})
            if warnings:
                metadata['warnings'] = warnings
            return writer.commit(metadata)

    def connection_failure(self, stderr, code):
        # pg_dump reports the same libpq messages as psycopg2; reuse the same wording.
        error = self.connection.describe_error(Exception(stderr))
        if error.details.get('reason') == 'postgres':
            return BackupError('pg_dump failed (exit %d): %s' % (code, stderr), reason='pg_dump')
        return error

    # -- the run -----------------------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        now = self.now or layout.utcnow()
        version_num, version_text = self._inspect_server()
        pg_dump, (pg_major, pg_minor), pg_dump_text = postgres.find_client(
            'pg_dump', version_num, self.connection.pg_bin_dir)
        method, level, native = resolve_compression(self.compression, self.compression_level, pg_major)
        directory = self.spec.directory(self.backup_root)
        result = {
            'changed': False, 'kind': self.kind, 'compression': method, 'compression_level': level,
            'server_version': version_text, 'pg_dump_version': pg_dump_text, 'pruned': [],
            'cleaned': [], 'executed_commands': self.executed_commands,
        }
        if self.check_mode:
            return self._predict(result, now, pg_dump, method, native)

        artifact_io.ensure_directory(self.backup_root)
        for sub in layout.SUBDIRS:
            artifact_io.ensure_directory(os.path.join(self.backup_root, sub))
        lock = job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job=self.kind) \
            if self.take_lock else job_lock.AlreadyHeld()
        with lock:
            result['lock_waited'] = round(lock.waited, 3)
            if lock.stale:
                self.log('previous holder of the lock (PID %s) is gone; continuing' % lock.stale.get('pid'))
            for kind in ALL_DATABASE_KINDS:
                result['cleaned'] += artifact_io.cleanup_directory(layout.KINDS[kind].directory(self.backup_root))
            now = self.now or layout.utcnow()
            if self.kind == 'database_weekly':
                existing = self._existing_weekly(now)
                if existing is not None and not self.force:
                    result.update(self._describe(existing), msg='a weekly dump for %s already exists' %
                                  layout.iso_week_label(now))
                    result['duration'] = round(time.monotonic() - started, 3)
                    return result
            self._check_free_space()
            path = os.path.join(directory, self._name(now, method, native))
            while self.kind != 'database_weekly' and os.path.exists(path):
                time.sleep(0.25)  # two runs in one second: take the next second's name
                now = layout.utcnow()
                path = os.path.join(directory, self._name(now, method, native))
            metadata = {
                'kind': self.kind, 'created': now.isoformat(), 'host': platform.node(),
                'source': {'database': self.connection.database, 'host': self.connection.host,
                           'port': self.connection.port, 'user': self.connection.user},
                'server_version': version_text, 'server_version_num': version_num,
                'tool_versions': {'pg_dump': pg_dump_text},
            }
            if self.tables:
                metadata['tables_only'] = ['%s.%s' % pair for pair in self.tables]
            self.log('dumping %s to %s' % (self.connection.database, path))
            with postgres.PrivateDir() as private_dir:
                document = self._dump(path, pg_dump, pg_major, private_dir, metadata)
            result.update(changed=True, path=path, sha256=document['sha256'], size=document['size'],
                          created=document['created'], tables=document['tables'])
            plan = self._plan_retention()
            for victim in plan.prune:
                artifact_io.remove_artifact(victim)
                result['pruned'].append(victim)
        result['duration'] = round(time.monotonic() - started, 3)
        return result

    def _name(self, now, method, native):
        return layout.database_dump_name(self.kind, now, self.prefix, zstd=(method == 'zstd' and not native))

    def _describe(self, item):
        return {'path': item.path, 'sha256': (item.metadata or {}).get('sha256'), 'size': item.size,
                'created': item.created.isoformat()}

    def _predict(self, result, now, pg_dump, method, native):
        directory = self.spec.directory(self.backup_root)
        if self.kind == 'database_weekly':
            existing = self._existing_weekly(now)
            if existing is not None and not self.force:
                result.update(self._describe(existing))
                result['duration'] = 0.0
                return result
        path = os.path.join(directory, self._name(now, method, native))
        self._check_free_space()
        plan = self._plan_retention(retention.Item(path, now, self.spec.tier))
        result.update(changed=True, path=path, pruned=plan.prune, duration=0.0)
        self.executed_commands.append('(check mode) %s --format=custom ... --dbname=%s' % (
            pg_dump, self.connection.database))
        return result


def _which_required(program, hint):
    path = shutil.which(program)
    if not path:
        raise BackupError('%s is required but was not found on PATH (%s)' % (program, hint))
    return path
