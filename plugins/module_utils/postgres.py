# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connecting to PostgreSQL and finding its client programs.

Connection options are defined once here (argument spec) and once in the
``cepcomunicacion.backup.postgres`` doc fragment.  The password reaches libpq
programs through a 0600 passfile in a private temporary directory (never
argv, never the environment of a child) and psycopg2 in-process.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

try:
    import psycopg2
    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the target
    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = _exc

DEBIAN_PG_ROOT = '/usr/lib/postgresql'
_VERSION_RE = re.compile(r'\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?')


def postgres_argument_spec():
    """Connection options shared by every module that talks to PostgreSQL."""
    return dict(
        login_host=dict(type='str', default='127.0.0.1', aliases=['host']),
        login_port=dict(type='int', default=5432, aliases=['port']),
        login_user=dict(type='str', default='postgres', aliases=['user']),
        login_password=dict(type='str', no_log=True, aliases=['password']),
        pg_bin_dir=dict(type='path'),
        connect_timeout=dict(type='int', default=10),
    )


class Connection:
    """Where and as whom to connect.  ``str()`` never shows the password."""

    def __init__(self, database, host='127.0.0.1', port=5432, user='postgres', password=None,
                 connect_timeout=10, pg_bin_dir=None):
        if not database:
            raise BackupError('a database name is required')
        self.database = database
        self.host = host or '127.0.0.1'
        self.port = int(port or 5432)
        self.user = user or 'postgres'
        self.password = password
        self.connect_timeout = int(connect_timeout or 10)
        self.pg_bin_dir = pg_bin_dir

    @classmethod
    def from_module_params(cls, params, database=None):
        return cls(database or params.get('database'), params.get('login_host'), params.get('login_port'),
                   params.get('login_user'), params.get('login_password'), params.get('connect_timeout'),
                   params.get('pg_bin_dir'))

    @property
    def where(self):
        return '%s:%s' % (self.host, self.port)

    def __repr__(self):
        return 'Connection(%s@%s/%s)' % (self.user, self.where, self.database)

    def redact(self, text):
        """Remove the password from any text that came back from a server or a program."""
        if text and self.password:
            text = text.replace(self.password, '********')
        return text

    # --- psycopg2 ---------------------------------------------------------------------------

    def connect(self, database=None, autocommit=True):
        if not HAS_PSYCOPG2:
            raise BackupError('the Python module psycopg2 is required on the host that runs this '
                              '(Debian: apt install python3-psycopg2): %s' % PSYCOPG2_IMPORT_ERROR)
        dbname = database or self.database
        try:
            conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                    dbname=dbname, connect_timeout=self.connect_timeout,
                                    application_name='cepcomunicacion-backup')
        except psycopg2.Error as exc:
            raise self.describe_error(exc, dbname)
        conn.autocommit = autocommit
        return conn

    def describe_error(self, exc, dbname=None):
        """Turn a libpq connection error into a message that says what to do."""
        dbname = dbname or self.database
        text = self.redact(str(exc).strip())
        lowered = text.lower()
        if 'password authentication failed' in lowered or 'authentication failed' in lowered:
            return BackupError("authentication failed for user '%s' on %s: check login_password "
                               "(the password is not shown)" % (self.user, self.where), reason='auth')
        if 'no password supplied' in lowered or 'fe_sendauth' in lowered:
            return BackupError("the server at %s asks for a password for user '%s' and none was given: "
                               "set login_password" % (self.where, self.user), reason='auth')
        if 'database' in lowered and 'does not exist' in lowered:
            return BackupError("database '%s' does not exist on %s: check the database name "
                               "(list them with psql -l)" % (dbname, self.where),
                               reason='no_database')
        if 'role' in lowered and 'does not exist' in lowered:
            return BackupError("role '%s' does not exist on %s: check login_user" % (self.user, self.where),
                               reason='auth')
        if ('could not connect' in lowered or 'connection refused' in lowered or 'timeout expired' in lowered
                or 'could not translate host name' in lowered or 'server closed the connection' in lowered):
            return BackupError('cannot connect to PostgreSQL at %s: the server is down or not listening '
                               'there (%s)' % (self.where, text.splitlines()[0] if text else 'no detail'),
                               reason='unreachable')
        return BackupError('PostgreSQL error on %s (database %s): %s' % (self.where, dbname, text),
                           reason='postgres')

    def server_version_num(self, conn):
        return int(conn.server_version)

    # --- libpq programs ---------------------------------------------------------------------

    def client_environment(self, private_dir):
        """Environment for a libpq program; writes a 0600 passfile into ``private_dir``."""
        env = dict(os.environ)
        for name in ('PGPASSWORD', 'PGSERVICE', 'PGSERVICEFILE', 'PGOPTIONS'):
            env.pop(name, None)
        env.update({
            'LC_ALL': 'C',
            'PGHOST': self.host,
            'PGPORT': str(self.port),
            'PGUSER': self.user,
            'PGCONNECT_TIMEOUT': str(self.connect_timeout),
            'PGAPPNAME': 'cepcomunicacion-backup',
        })
        if self.password is not None:
            passfile = os.path.join(private_dir, 'pgpass')
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            escaped = self.password.replace('\\', '\\\\').replace(':', '\\:')
            with os.fdopen(fd, 'w') as handle:
                handle.write('*:*:*:*:%s\n' % escaped)
            env['PGPASSFILE'] = passfile
        else:
            # a file that does not exist: libpq then asks no passfile (a user's ~/.pgpass is not read)
            env['PGPASSFILE'] = os.path.join(private_dir, 'no-pgpass')
        return env


def dbname_option(database):
    """``--dbname=`` for pg_dump and pg_restore that libpq takes literally.

    A bare ``--dbname`` value containing ``=`` (or starting with ``postgresql://``) is parsed as a connection
    string: a database named ``dbname=other`` would dump ``other``, and ``it's a "db" x=1`` could not be dumped at
    all.  Such a name (libpq's own test: an ``=`` or a URI prefix) is quoted by libpq's rules (single quotes,
    backslash escapes), so any name means only itself; a plain name stays as it is.
    """
    if '=' in database or database.startswith(('postgresql://', 'postgres://')):
        return "--dbname=dbname='%s'" % database.replace('\\', '\\\\').replace("'", "\\'")
    return '--dbname=%s' % database


def table_pattern(schema, table):
    """pg_dump ``--table`` takes a psql pattern (``*``, ``?``, case folding); double-quoted parts match literally."""
    return '"%s"."%s"' % (schema.replace('"', '""'), table.replace('"', '""'))


class PrivateDir:
    """A 0700 temporary directory for passfiles and logs, removed on exit."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix='cepcomunicacion-backup-')
        os.chmod(self.path, 0o700)
        return self.path

    def __exit__(self, exc_type, exc, tb):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def tool_version(path):
    """(major, minor, text) of a PostgreSQL client program."""
    try:
        out = subprocess.run([path, '--version'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,  # noqa: S603 -- argv list, no shell
                             env=dict(os.environ, LC_ALL='C'), timeout=30, check=False).stdout
    except OSError as exc:
        raise BackupError('cannot run %s: %s' % (path, exc.strerror or exc), path=path)
    text = out.decode('utf-8', 'replace').strip()
    match = _VERSION_RE.search(text)
    if not match:
        raise BackupError('cannot read the version of %s (it printed %r)' % (path, text[:200]), path=path)
    return int(match.group(1)), int(match.group(2) or 0), text


def server_major(version_num):
    return version_num // 10000


def find_client(program, server_version_num=None, pg_bin_dir=None):
    """Path of ``program`` (pg_dump, pg_restore, psql) new enough for the server.

    With ``pg_bin_dir`` only that directory is used.  Otherwise Debian's
    versioned directories are preferred (newest first), then ``PATH``.  A
    program older than the server is refused: a dump made by an older pg_dump
    can be silently wrong.
    """
    if pg_bin_dir:
        candidates = [os.path.join(pg_bin_dir, program)]
    else:
        versioned = glob.glob(os.path.join(DEBIAN_PG_ROOT, '*', 'bin', program))
        versioned.sort(key=lambda p: int(re.sub(r'\D', '', p.split(os.sep)[-3]) or 0), reverse=True)
        on_path = shutil.which(program)
        candidates = versioned + ([on_path] if on_path else [])
    candidates = [path for path in candidates if os.path.isfile(path) and os.access(path, os.X_OK)]
    if not candidates:
        where = pg_bin_dir or 'PATH or %s/*/bin' % DEBIAN_PG_ROOT
        raise BackupError('%s was not found in %s: install the PostgreSQL client '
                          '(Debian: apt install postgresql-client)' % (program, where), reason='no_client')
    path = candidates[0]
    major, minor, text = tool_version(path)
    if server_version_num is not None:
        server = server_major(server_version_num)
        if major < server:
            raise BackupError(
                '%s %d.%d at %s is older than the PostgreSQL server (%d); its dump could be wrong. '
                'Install postgresql-client-%d (or set pg_bin_dir to a %d client).' % (
                    program, major, minor, path, server, server, server),
                reason='client_too_old', path=path)
    return path, (major, minor), text
