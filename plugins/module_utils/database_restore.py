# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Database restores that cannot make things worse.

Every mode first chooses a dump (path, ``at``, or latest; daily and weekly),
verifies its SHA-256 sidecar, and restores it with ``pg_restore -j`` into a
new scratch database.  Nothing touches the live database until the scratch
copy has been checked:

* ``full``: take a safety dump of the target into ``database/pre-restore/``,
  then swap: the target is renamed to ``<db>__pre_restore_<ts>`` and the
  scratch database takes its name.  ``rollback`` swaps the old one back.
* ``tables``: the chosen tables' data is replaced in the live database (after
  a safety dump of those tables), in one transaction; other tables untouched.
* ``rows``: the rows matching an operator's WHERE clause (run against the
  scratch copy only, inside a read-only transaction) are inserted into the
  live table where their primary key is missing; existing rows are never
  changed.

If anything fails before the swap (or the data transaction commits), the live
database is as it was and the scratch database is dropped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_backup
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by postgres.Connection.connect
    sql = None

MODES = ('full', 'tables', 'rows', 'rollback')
MAX_IDENTIFIER = 63
_ROLE_RE = re.compile(r'(?:OWNER TO|GRANT .+? TO|REVOKE .+? FROM) ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)', re.I)
_PROGRESS_RE = re.compile(r'processing data for table "([^"]+)"')
SYSTEM_ROLES = ('public', 'postgres', 'current_user', 'session_user', 'current_role')


def split_table(name):
    """'schema.table' or 'table' (public) -> (schema, table); quotes are not interpreted."""
    if not name or not isinstance(name, str):
        raise BackupError('a table name is required')
    schema, _dot, table = name.rpartition('.')
    return (schema or 'public'), table


class Timer:
    def __init__(self):
        self.phases = {}
        self.started = time.monotonic()

    def phase(self, name):
        timer = self

        class _Phase:
            def __enter__(self):
                self.start = time.monotonic()
                return self

            def __exit__(self, exc_type, exc, tb):
                timer.phases[name] = round(time.monotonic() - self.start, 3)
                return False
        return _Phase()

    @property
    def total(self):
        return round(time.monotonic() - self.started, 3)


class DatabaseRestore:
    def __init__(self, connection, backup_root=layout.DEFAULT_BACKUP_ROOT, mode='full', backup=None, at=None,
                 verify=True, jobs=None, sanity_sql=None, drop_previous=False, pre_restore_dump=True, owner=None,
                 tables=None, rows=None, pre_restore_database=None, maintenance_db='postgres', lock_timeout=300,
                 prefix=None, count_rows=True, check_mode=False, log=None, now=None):
        if mode not in MODES:
            raise BackupError('mode must be one of %s, not %r' % (', '.join(MODES), mode))
        if mode == 'tables' and not tables:
            raise BackupError("mode 'tables' needs the list of tables to restore")
        if mode == 'rows' and not (rows and rows.get('table') and rows.get('where')):
            raise BackupError("mode 'rows' needs rows.table and rows.where")
        self.connection = connection
        self.backup_root = backup_root
        self.mode = mode
        self.backup = backup
        self.at = at
        self.verify = verify
        self.jobs = int(jobs or os.cpu_count() or 1)
        self.sanity_sql = list(sanity_sql or [])
        self.drop_previous = drop_previous
        self.pre_restore_dump = pre_restore_dump
        self.owner = owner
        self.tables = [split_table(t) for t in (tables or [])]
        self.rows = rows
        self.pre_restore_database = pre_restore_database
        self.maintenance_db = maintenance_db
        self.lock_timeout = lock_timeout
        self.prefix = prefix
        self.count_rows = count_rows
        self.check_mode = check_mode
        self.log = log or (lambda message: None)
        self.now = now or layout.utcnow()
        self.stamp = layout.compact_timestamp(self.now)
        self.executed_commands = []
        self.data_entries = None
        self.roles_created = []
        self.server_version = None
        self.timer = Timer()
        self.scratch = self._identifier('%s__restore_%s' % (connection.database, self.stamp))
        self.previous = self._identifier('%s__pre_restore_%s' % (connection.database, self.stamp))

    def _identifier(self, name):
        if len(name.encode('utf-8')) > MAX_IDENTIFIER:
            raise BackupError('the database name %r is too long to add a restore suffix (PostgreSQL allows %d '
                              'bytes); restore into a shorter name with a different database' % (
                                  self.connection.database, MAX_IDENTIFIER))
        return name

    # -- choosing and verifying ----------------------------------------------------------------

    def choose(self):
        if self.backup:
            path = os.path.abspath(self.backup)
            if not os.path.isfile(path):
                raise BackupError('backup %s does not exist' % path, reason='no_backup')
            metadata = artifact_io.read_metadata(path) or {}
            created = layout.parse_time(metadata['created']) if metadata.get('created') else layout.utcnow()
            return catalogue.Artifact('database', path, None, created, metadata,
                                      os.path.exists(path + layout.SHA256_SUFFIX))
        items = catalogue.list_artifacts(self.backup_root, list(database_backup.DATABASE_KINDS), self.prefix)
        return catalogue.choose(items, self.at, kinds_label='database dump')

    def check_integrity(self, item):
        if not self.verify:
            self.log('verify is off: %s is restored without checking its checksum' % item.path)
            return False
        status, actual = catalogue.verify(item)
        if status == catalogue.STATUS_MISSING_SIDECAR:
            raise BackupError('%s has no checksum sidecar (%s.sha256); refusing to restore an unverifiable dump '
                              '(verify: false overrides this, at your own risk)' % (item.path, item.path),
                              reason='missing_sidecar', backup=item.path)
        if status != catalogue.STATUS_OK:
            raise BackupError('%s fails its checksum (expected %s, found %s): the dump is corrupt or was altered. '
                              'Nothing was changed. Choose another backup (backup: or at:).' % (
                                  item.path, (item.metadata or {}).get('sha256') or 'the sidecar', actual),
                              reason='checksum_mismatch', backup=item.path)
        return True

    # -- helpers -------------------------------------------------------------------------------

    def _admin(self):
        return self.connection.connect(self.maintenance_db)

    def _exists(self, cur, dbname):
        cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', (dbname,))
        return cur.fetchone() is not None

    def _database_owner(self, cur, dbname):
        cur.execute('SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s', (dbname,))
        row = cur.fetchone()
        return row[0] if row else None

    def _drop(self, dbname):
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                if self._exists(cur, dbname):
                    self._terminate(cur, dbname)
                    cur.execute(sql.SQL('DROP DATABASE {}').format(sql.Identifier(dbname)))
                    self.executed_commands.append('DROP DATABASE %s' % dbname)
        finally:
            conn.close()

    def _terminate(self, cur, dbname):
        cur.execute('SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
                    'WHERE datname = %s AND pid <> pg_backend_pid()', (dbname,))
        return cur.fetchone()[0]

    def _drop_leftovers(self):
        """Drop scratch databases of restores that died (we hold the lock, so none is running)."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute('SELECT datname FROM pg_database WHERE datname LIKE %s',
                            (self.connection.database.replace('_', '\\_') + '\\_\\_restore\\_%',))
                leftovers = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
        for name in leftovers:
            self.log('dropping %s, left by an interrupted restore' % name)
            self._drop(name)
        if leftovers:
            self._allow_connections_again()
        return leftovers

    def _allow_connections_again(self):
        """A restore killed inside the swap leaves the live database closed to new sessions: open it again."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute('SELECT datallowconn FROM pg_database WHERE datname = %s', (self.connection.database,))
                row = cur.fetchone()
                if row and row[0] is False:
                    cur.execute(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS true').format(
                        sql.Identifier(self.connection.database)))
                    self.log('%s was left refusing connections by an interrupted restore; connections are allowed '
                             'again' % self.connection.database)
        finally:
            conn.close()

    def _archive_input(self, item):
        """Path pg_restore can seek in: the dump itself, or a decompressed temporary beside it."""
        if not item.path.endswith('.zst'):
            return item.path
        directory = os.path.dirname(item.path)
        target = os.path.join(directory, '%srestore-%s.%d' % (layout.TEMP_MARK, item.name[:-4], os.getpid()))
        zstd = shutil.which('zstd')
        if not zstd:
            raise BackupError('%s is zstd-compressed and the zstd program is missing (apt install zstd)' % item.path)
        self.executed_commands.append('zstd -dcq %s > %s' % (item.path, target))
        with open(target, 'wb') as out:
            os.chmod(target, layout.FILE_MODE)
            proc = subprocess.run([zstd, '-dcq', item.path], stdout=out, stderr=subprocess.PIPE, check=False)  # noqa: S603 -- argv list, no shell
        if proc.returncode != 0:
            os.unlink(target)
            raise BackupError('cannot decompress %s: %s' % (item.path, proc.stderr.decode('utf-8', 'replace').strip()))
        return target

    def _pg_restore(self, args, env, log_progress=False):
        pg_restore, _version, _text = postgres.find_client('pg_restore', self.server_version, self.connection.pg_bin_dir)
        argv = [pg_restore] + args
        self.executed_commands.append(' '.join(argv))
        if not log_progress:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)  # noqa: S603 -- argv list, no shell
            return proc.returncode, proc.stdout, self.connection.redact(proc.stderr.decode('utf-8', 'replace'))
        # --verbose names each table as its data is restored: log "done / total" as it goes
        total = self.data_entries or '?'
        lines = []
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env)  # noqa: S603 -- argv list, no shell; pg_restore found by find_client
            done = 0
            for raw in proc.stderr:
                line = self.connection.redact(raw.decode('utf-8', 'replace'))
                lines.append(line)
                if _PROGRESS_RE.search(line):
                    done += 1
                    self.log('pg_restore: table data %d / %s (%s)' % (done, total, _PROGRESS_RE.search(line).group(1)))
            proc.wait()
            out.seek(0)
            return proc.returncode, out.read(), ''.join(lines)

    def _missing_roles(self, cur, archive, env):
        """Roles that own or are granted objects in the dump but do not exist on this server."""
        rc, listing, err = self._pg_restore(['--list', archive], env)
        self.data_entries = sum(1 for line in listing.decode('utf-8', 'replace').splitlines() if ' TABLE DATA ' in line)
        rc, out, err = self._pg_restore(['--schema-only', '--file=-', archive], env)
        if rc != 0:
            raise BackupError('pg_restore cannot read %s: %s' % (archive, err.strip()[-500:]), reason='bad_dump')
        wanted = set()
        for match in _ROLE_RE.finditer(out.decode('utf-8', 'replace')):
            name = match.group(1)
            name = name[1:-1].replace('""', '"') if name.startswith('"') else name
            if name.lower() not in SYSTEM_ROLES:
                wanted.add(name)
        cur.execute('SELECT rolname FROM pg_roles')
        existing = set(row[0] for row in cur.fetchall())
        return sorted(wanted - existing)

    def _user_tables(self, dbname):
        conn = self.connection.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                            "AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2")
                tables = cur.fetchall()
                counts = {}
                if self.count_rows:
                    for schema, table in tables:
                        cur.execute(sql.SQL('SELECT count(*) FROM {}.{}').format(
                            sql.Identifier(schema), sql.Identifier(table)))
                        counts['%s.%s' % (schema, table)] = cur.fetchone()[0]
                return tables, counts
        finally:
            conn.close()

    def _run_sanity(self, dbname):
        conn = self.connection.connect(dbname, autocommit=False)
        try:
            for statement in self.sanity_sql:
                with conn.cursor() as cur:
                    try:
                        cur.execute(statement)
                        row = cur.fetchone()
                    except Exception as exc:  # psycopg2.Error: report, never crash
                        raise BackupError('sanity SQL failed on the restored copy: %s (%s)' % (
                            statement, str(exc).strip()), reason='sanity')
                    if not row or row[0] is not True:
                        raise BackupError('sanity SQL did not return true on the restored copy: %s (got %r). '
                                          'The live database was not touched.' % (statement, row[0] if row else None),
                                          reason='sanity')
                conn.rollback()
        finally:
            conn.close()

    # -- phases --------------------------------------------------------------------------------

    def restore_scratch(self, archive, env, owner):
        """Create the scratch database and pg_restore into it; returns (tables, counts)."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                if self._exists(cur, self.scratch):
                    raise BackupError('scratch database %s already exists; another restore may be running' % self.scratch)
                missing = self._missing_roles(cur, archive, env)
                for role in missing:
                    cur.execute(sql.SQL('CREATE ROLE {} NOLOGIN').format(sql.Identifier(role)))
                    self.executed_commands.append('CREATE ROLE %s NOLOGIN' % role)
                self.roles_created = missing
                template = {}
                if self._exists(cur, self.connection.database):
                    cur.execute('SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database '
                                'WHERE datname = %s', (self.connection.database,))
                    template = dict(zip(('ENCODING', 'LC_COLLATE', 'LC_CTYPE'), cur.fetchone()))
                statement = sql.SQL('CREATE DATABASE {} OWNER {} TEMPLATE template0').format(
                    sql.Identifier(self.scratch), sql.Identifier(owner))
                clauses = {'ENCODING': sql.SQL(' ENCODING {}'), 'LC_COLLATE': sql.SQL(' LC_COLLATE {}'),
                           'LC_CTYPE': sql.SQL(' LC_CTYPE {}')}
                for key, value in template.items():
                    statement = statement + clauses[key].format(sql.Literal(value))
                cur.execute(statement)
                self.executed_commands.append('CREATE DATABASE %s OWNER %s' % (self.scratch, owner))
        finally:
            conn.close()
        rc, _out, err = self._pg_restore([
            postgres.dbname_option(self.scratch), '--host=%s' % self.connection.host, '--port=%d' % self.connection.port,
            '--username=%s' % self.connection.user, '--no-password', '--jobs=%d' % self.jobs, '--exit-on-error',
            '--verbose', archive], env, log_progress=True)
        if rc != 0:
            errors = [line for line in err.splitlines() if 'error' in line.lower()]
            raise BackupError('pg_restore failed (exit %d) restoring into the scratch database: %s. '
                              'The live database was not touched.' % (rc, ' | '.join(errors[-3:]) or err[-500:]),
                              reason='pg_restore')
        tables, counts = self._user_tables(self.scratch)
        if not tables:
            raise BackupError('the restored copy has no tables: refusing to swap an empty database in. '
                              'The live database was not touched.', reason='empty')
        self._run_sanity(self.scratch)
        return tables, counts

    def swap(self, target_exists):
        """Rename target -> previous and scratch -> target in one transaction.

        A crash or a failure between the two renames rolls both back: the live name never points at nothing.
        """
        target = self.connection.database
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                if target_exists:  # committed at once: no new sessions on the target from here on
                    cur.execute(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS false').format(sql.Identifier(target)))
                conn.autocommit = False
                recorded = len(self.executed_commands)
                try:
                    for attempt in range(10):
                        terminated = self._terminate(cur, target) if target_exists else 0
                        try:
                            if target_exists:
                                cur.execute(sql.SQL('ALTER DATABASE {} RENAME TO {}').format(
                                    sql.Identifier(target), sql.Identifier(self.previous)))
                                self.executed_commands.append('ALTER DATABASE %s RENAME TO %s' % (target, self.previous))
                            cur.execute(sql.SQL('ALTER DATABASE {} RENAME TO {}').format(
                                sql.Identifier(self.scratch), sql.Identifier(target)))
                            self.executed_commands.append('ALTER DATABASE %s RENAME TO %s' % (self.scratch, target))
                            conn.commit()
                            break
                        except Exception:  # sessions still closing; bounded retry
                            conn.rollback()
                            del self.executed_commands[recorded:]
                            if attempt == 9 or not target_exists:
                                raise
                            self.log('%d sessions terminated on %s; retrying the rename' % (terminated, target))
                            time.sleep(0.5)
                except Exception as exc:
                    conn.autocommit = True
                    if target_exists:
                        cur.execute(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS true').format(
                            sql.Identifier(target)))
                    raise BackupError('cannot swap the restored copy in as %s: %s. The live database was not changed.'
                                      % (target, str(exc).strip()), reason='swap')
                conn.autocommit = True
                if target_exists:
                    cur.execute(sql.SQL('ALTER DATABASE {} WITH ALLOW_CONNECTIONS true').format(
                        sql.Identifier(self.previous)))
        finally:
            conn.close()

    def safety_dump(self, tables=None):
        # zstd where available: a safety dump must be quick (the 1 GB benchmark: gzip 18 s, zstd 5 s), and the
        # pg_restore module reads it either way.
        job = database_backup.DatabaseBackup(
            self.connection, backup_root=self.backup_root, kind='database_pre_restore', retention_days=0,
            compression='zstd' if shutil.which('zstd') else 'auto',
            prefix=self.connection.database, tables=tables, take_lock=False, free_space_margin=0.0, log=self.log)
        result = job.run()
        self.executed_commands.extend(job.executed_commands)
        return result['path']

    # -- modes ---------------------------------------------------------------------------------

    def run(self):
        result = {'changed': False, 'mode': self.mode, 'executed_commands': self.executed_commands}
        admin = self._admin()
        try:
            self.server_version = self.connection.server_version_num(admin)
            with admin.cursor() as cur:
                target_exists = self._exists(cur, self.connection.database)
                target_owner = self._database_owner(cur, self.connection.database) if target_exists else None
                if self.owner:
                    cur.execute('SELECT 1 FROM pg_roles WHERE rolname = %s', (self.owner,))
                    owner_missing = cur.fetchone() is None
                else:
                    owner_missing = False
        finally:
            admin.close()
        if self.mode == 'rollback':
            return self.rollback(result, target_exists)
        with self.timer.phase('verify'):
            item = self.choose()
            result['backup'] = item.path
            result['backup_created'] = item.created.isoformat()
            result['sha256_verified'] = self.check_integrity(item)
        if self.mode != 'full' and not target_exists:
            raise BackupError("database '%s' does not exist on %s; a %s restore puts data into a live database "
                              "(use mode: full to create it)" % (self.connection.database, self.connection.where,
                                                                 self.mode), reason='no_database')
        if self.check_mode:
            result.update(changed=True, duration=self.timer.total, phases=self.timer.phases,
                          would_create_database=not target_exists, pre_restore_database=(
                              self.previous if target_exists and self.mode == 'full' else None))
            return result

        owner = self.owner or target_owner or self.connection.user
        with job_lock.JobLock(self.backup_root, database_backup.LOCK_KIND, timeout=self.lock_timeout,
                              job='restore') as lock:
            result['lock_waited'] = round(lock.waited, 3)
            result['cleaned'] = self._drop_leftovers()
            artifact_io.ensure_directory(layout.KINDS['database_pre_restore'].directory(self.backup_root))
            if owner_missing:
                conn = self._admin()
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql.SQL('CREATE ROLE {} LOGIN').format(sql.Identifier(self.owner)))
                    self.executed_commands.append('CREATE ROLE %s LOGIN' % self.owner)
                finally:
                    conn.close()
            with postgres.PrivateDir() as private_dir:
                env = self.connection.client_environment(private_dir)
                archive = self._archive_input(item)
                try:
                    return self._restore(result, item, archive, env, owner, target_exists)
                finally:
                    if archive != item.path and os.path.exists(archive):
                        os.unlink(archive)

    def _restore(self, result, item, archive, env, owner, target_exists):
        pre_restore_backup = None
        if self.pre_restore_dump and target_exists and self.mode == 'full':
            with self.timer.phase('pre_restore'):
                try:
                    pre_restore_backup = self.safety_dump()
                except BackupError as exc:
                    # a corrupt live database may not dump; the renamed database is still kept
                    self.log('pre-restore dump of %s failed: %s' % (self.connection.database, exc))
                    result['pre_restore_warning'] = 'pre-restore dump failed: %s' % exc
        try:
            with self.timer.phase('restore'):
                tables, counts = self.restore_scratch(archive, env, owner)
            result['roles_created'] = self.roles_created
            if self.mode == 'full':
                with self.timer.phase('swap'):
                    self.swap(target_exists)
                result.update(tables_restored=['%s.%s' % t for t in tables], row_counts=counts,
                              pre_restore_database=self.previous if target_exists else None,
                              created_database=not target_exists)
                if self.drop_previous and target_exists:
                    with self.timer.phase('drop_previous'):
                        self._drop(self.previous)
                    result['pre_restore_database'] = None
            elif self.mode == 'tables':
                absent = ['%s.%s' % pair for pair in self.tables if tuple(pair) not in set(map(tuple, tables))]
                if absent:
                    raise BackupError('table %s is not in the backup %s (it holds %s); nothing was changed' % (
                        ', '.join(repr(name) for name in absent), item.path,
                        ', '.join('%s.%s' % t for t in sorted(tables)[:20]) or 'no tables'), reason='no_table')
                with self.timer.phase('pre_restore'):
                    pre_restore_backup = self.safety_dump(list(self.tables)) \
                        if self.pre_restore_dump else None
                with self.timer.phase('apply'):
                    result.update(self.apply_tables(archive, env))
            else:
                with self.timer.phase('pre_restore'):
                    schema, table = split_table(self.rows['table'])
                    pre_restore_backup = self.safety_dump([(schema, table)]) \
                        if self.pre_restore_dump else None
                with self.timer.phase('apply'):
                    result.update(self.apply_rows())
        finally:
            if self.mode != 'full' or not result.get('tables_restored'):
                with self.timer.phase('cleanup'):
                    self._drop(self.scratch)
        changed = result.get('rows_inserted', 1) > 0 or self.mode != 'rows'
        result.update(changed=changed, pre_restore_backup=pre_restore_backup, duration=self.timer.total,
                      phases=self.timer.phases)
        result.setdefault('pre_restore_database', None)
        return result

    def _live_columns(self, cur, schema, table):
        cur.execute("SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
                    "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
                    (schema, table))
        return [row[0] for row in cur.fetchall()]

    def _copy_out(self, source_dbname, schema, table, columns, where, handle):
        conn = self.connection.connect(source_dbname, autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute('SET TRANSACTION READ ONLY')
                query = sql.SQL('SELECT {} FROM {}.{}').format(
                    sql.SQL(', ').join(sql.Identifier(c) for c in columns), sql.Identifier(schema), sql.Identifier(table))
                if where:
                    # Trust model: the WHERE clause is the playbook operator's own SQL and runs only here, against
                    # the scratch copy, in a read-only transaction. No other value is ever interpolated into SQL.
                    query = query + sql.SQL(' WHERE (') + sql.SQL(where) + sql.SQL(')')
                try:
                    cur.copy_expert(sql.SQL('COPY ({}) TO STDOUT WITH (FORMAT binary)').format(query).as_string(conn),
                                    handle)
                except Exception as exc:
                    raise BackupError('the rows to restore cannot be read out of the backup copy of %s.%s: %s' % (
                        schema, table, str(exc).strip()), reason='rows')
            conn.rollback()
        finally:
            conn.close()

    def apply_tables(self, archive, env):
        """Replace the data of the chosen tables in the live database with the backup's, in one transaction."""
        live = self.connection.connect(autocommit=False)
        restored = {}
        created = []
        try:
            with live.cursor() as cur:
                for schema, table in self.tables:
                    if not self._live_columns(cur, schema, table):
                        created.append('%s.%s' % (schema, table))
                live.rollback()
            for name in created:  # structure from the dump for tables that no longer exist
                schema, table = split_table(name)
                rc, _out, err = self._pg_restore([
                    postgres.dbname_option(self.connection.database), '--host=%s' % self.connection.host,
                    '--port=%d' % self.connection.port, '--username=%s' % self.connection.user, '--no-password',
                    '--schema-only', '--exit-on-error', '--schema=%s' % schema, '--table=%s' % table, archive], env)
                if rc != 0:
                    raise BackupError('cannot recreate table %s from the dump: %s' % (name, err.strip()[-500:]))
            with live.cursor() as cur:
                cur.execute('SET LOCAL session_replication_role = replica')  # no FK cascades into other tables
                for schema, table in self.tables:
                    columns = self._live_columns(cur, schema, table)
                    if not columns:
                        raise BackupError('table %s.%s is neither in the live database nor in the dump' % (schema, table))
                    with tempfile.TemporaryFile() as buffer:
                        self._copy_out(self.scratch, schema, table, columns, None, buffer)
                        buffer.seek(0)
                        cur.execute(sql.SQL('DELETE FROM {}.{}').format(sql.Identifier(schema), sql.Identifier(table)))
                        cur.copy_expert(sql.SQL('COPY {}.{} ({}) FROM STDIN WITH (FORMAT binary)').format(
                            sql.Identifier(schema), sql.Identifier(table),
                            sql.SQL(', ').join(sql.Identifier(c) for c in columns)).as_string(live), buffer)
                        restored['%s.%s' % (schema, table)] = cur.rowcount
                    self._sync_sequences(cur, schema, table)
            live.commit()
        except BaseException:
            live.rollback()
            raise
        finally:
            live.close()
        return {'tables_restored': sorted(restored), 'row_counts': restored, 'tables_created': created}

    def _sync_sequences(self, cur, schema, table):
        """Move owned sequences past the restored rows so new inserts do not collide."""
        cur.execute("SELECT a.attname, pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), a.attname) "
                    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 "
                    "AND NOT a.attisdropped", (schema, table, schema, table))
        for column, sequence in cur.fetchall():
            if sequence:
                # the sequence's own schema and name (not its quoted text) so SQL is composed from identifiers only
                cur.execute('SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace '
                            'WHERE c.oid = %s::regclass', (sequence,))
                seq_schema, seq_name = cur.fetchone()
                cur.execute(sql.SQL('SELECT setval(%s, GREATEST((SELECT max({}) FROM {}.{}), '
                                    '(SELECT last_value FROM {}.{})))').format(
                    sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table),
                    sql.Identifier(seq_schema), sql.Identifier(seq_name)), (sequence,))

    def apply_rows(self):
        """Insert the backup's matching rows whose primary key is missing from the live table."""
        schema, table = split_table(self.rows['table'])
        live = self.connection.connect(autocommit=False)
        try:
            with live.cursor() as cur:
                columns = self._live_columns(cur, schema, table)
                if not columns:
                    raise BackupError("table %s.%s does not exist in the live database '%s'" % (
                        schema, table, self.connection.database), reason='no_table')
                cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                            (sql.SQL('{}.{}').format(sql.Identifier(schema), sql.Identifier(table)).as_string(live),))
                key = [row[0] for row in cur.fetchall()]
                if not key:
                    raise BackupError('table %s.%s has no primary key; rows mode needs one to tell which rows are '
                                      'missing (use mode: tables instead)' % (schema, table), reason='no_primary_key')
                with tempfile.TemporaryFile() as buffer:
                    self._copy_out(self.scratch, schema, table, columns, self.rows['where'], buffer)
                    buffer.seek(0)
                    staging = sql.Identifier('cep_restore_rows')
                    cur.execute(sql.SQL('CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {}.{} WITH NO DATA').format(
                        staging, sql.SQL(', ').join(sql.Identifier(c) for c in columns),
                        sql.Identifier(schema), sql.Identifier(table)))
                    cur.copy_expert(sql.SQL('COPY {} FROM STDIN WITH (FORMAT binary)').format(staging).as_string(live),
                                    buffer)
                cur.execute(sql.SQL('SELECT count(*) FROM {}').format(staging))
                found = cur.fetchone()[0]
                match = sql.SQL(' AND ').join(
                    sql.SQL('t.{0} = r.{0}').format(sql.Identifier(k)) for k in key)
                cur.execute(sql.SQL('INSERT INTO {}.{} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} r '
                                    'WHERE NOT EXISTS (SELECT 1 FROM {}.{} t WHERE {})').format(
                    sql.Identifier(schema), sql.Identifier(table),
                    sql.SQL(', ').join(sql.Identifier(c) for c in columns),
                    sql.SQL(', ').join(sql.SQL('r.{}').format(sql.Identifier(c)) for c in columns),
                    staging, sql.Identifier(schema), sql.Identifier(table), match))
                inserted = cur.rowcount
                self._sync_sequences(cur, schema, table)
            live.commit()
        except BackupError:
            live.rollback()
            raise
        except Exception as exc:
            live.rollback()
            raise BackupError('inserting the recovered rows into %s.%s failed and was rolled back (the live table is '
                              'unchanged): %s' % (schema, table, str(exc).strip()), reason='rows')
        finally:
            live.close()
        return {'tables_restored': ['%s.%s' % (schema, table)],
                'rows_found': found, 'rows_present': found - inserted, 'rows_inserted': inserted}

    def rollback(self, result, target_exists):
        """Put a pre-restore database back: target -> <db>__rolled_back_<ts>, previous -> target."""
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                previous = self.pre_restore_database
                if not previous:
                    cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname DESC LIMIT 1",
                                (self.connection.database.replace('_', '\\_') + '\\_\\_pre\\_restore\\_%',))
                    row = cur.fetchone()
                    if not row:
                        raise BackupError("no pre-restore database of '%s' exists to roll back to" %
                                          self.connection.database, reason='no_pre_restore')
                    previous = row[0]
                elif not self._exists(cur, previous):
                    raise BackupError("pre-restore database '%s' does not exist" % previous, reason='no_pre_restore')
                result['pre_restore_database'] = previous
                if self.check_mode:
                    result.update(changed=True, duration=self.timer.total)
                    return result
        finally:
            conn.close()
        self.scratch = previous
        self.previous = self._identifier('%s__rolled_back_%s' % (self.connection.database, self.stamp))
        with self.timer.phase('swap'):
            self.swap(target_exists)
        result.update(changed=True, rolled_back_database=self.previous if target_exists else None,
                      duration=self.timer.total, phases=self.timer.phases)
        return result
