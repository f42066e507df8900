# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the backup_server role leaves on a server, and what its jobs produce when cron runs them.

Run by Molecule's testinfra verifier against the container (testinfra's podman backend); the
``host`` fixture comes from pytest-testinfra. side_effect.yml ran every job as cron would and
recorded each exit code and output in RESULTS_FILE.
"""

from __future__ import annotations

import json
import re

import pytest

BACKUP_ROOT = '/var/backups/cepcomunicacion'
CONFIG_FILE = '/etc/cepcomunicacion/backup.conf'
COMMAND = '/usr/local/bin/cepcomunicacion-backup'
STATUS_FILE = '/var/run/cepcomunicacion-backup-status.json'
RESULTS_FILE = '/var/tmp/molecule-jobs.json'
CRON_FILES = '/etc/crontab /etc/cron.d/*'

# PRODUCT.md's schedule (UTC): job -> minute hour day-of-month month weekday.
SCHEDULE = {
    'database': '0 2 * * *',
    'config': '30 2 * * *',
    'media': '0 3 * * *',
    'database --weekly': '30 3 * * 0',
    'check': '0 */6 * * *',
}
JOBS_RUN = ('database', 'database --weekly', 'media', 'config', 'check')
DUMP_NAME = re.compile(r'^cepcomunicacion_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.dump(\.zst)?$')
WEEKLY_NAME = re.compile(r'^cepcomunicacion_weekly_\d{4}-W\d{2}\.dump(\.zst)?$')
SNAPSHOT_NAME = re.compile(r'^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$')
CONFIG_NAME = re.compile(r'^config_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.tar\.gz$')


def _run(host, *argv):
    """Run argv (no shell) and fail with its output unless it exits 0."""
    result = host.run(' '.join(_quote(arg) for arg in argv))
    assert result.rc == 0, '%s exited %d: %s %s' % (' '.join(argv), result.rc, result.stdout, result.stderr)
    return result.stdout


def _quote(arg):
    return "'%s'" % arg.replace("'", "'\\''")


def _listing(host, directory, pattern):
    """Names in directory that match pattern, sorted (oldest first: the names hold UTC times)."""
    names = _run(host, 'ls', '-1', directory).split()
    return sorted(name for name in names if pattern.match(name))


def _job_results(host):
    results = {}
    for line in host.file(RESULTS_FILE).content_string.splitlines():
        if line.strip():
            record = json.loads(line)
            results[record['job']] = record
    return results


def _cron_entries(host):
    """{job: 'min hour dom month dow'} from the system crontabs (with their user field)."""
    entries = {}
    text = host.run('cat %s 2>/dev/null' % CRON_FILES).stdout
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or line.lstrip().startswith('#') or '=' in fields[0]:
            continue
        command = fields[6:]
        if not any(word.endswith('cepcomunicacion-backup') for word in command[:1]):
            continue
        job = next((word for word in command[1:] if word in ('database', 'media', 'config', 'offsite', 'check')), None)
        if job is None:
            continue
        if '--weekly' in command:
            job += ' --weekly'
        if '--restore-test' in command:
            job += ' --restore-test'
        entries[job] = ' '.join(fields[:5])
    return entries


@pytest.mark.parametrize('package', ['postgresql-client-15', 'python3', 'python3-psycopg2', 'rsync', 'zstd',
                                     'tar', 'logrotate', 'cron'])
def test_package_installed(host, package):
    assert host.package(package).is_installed


def test_config_file_is_private(host):
    config = host.file(CONFIG_FILE)
    assert config.is_file
    assert config.user == 'root'
    assert config.group == 'root'
    assert config.mode == 0o600


def test_config_file_holds_no_password_in_other_files(host):
    # The password is in the 0600 config file only: not in cron, not in the logs.
    password = 'molecule-test-only-5f1c'
    found = host.run('grep -rl -- %s /etc/cron.d /etc/crontab /var/log/cepcomunicacion 2>/dev/null' % password)
    assert found.stdout.strip() == ''


@pytest.mark.parametrize('subdir', ['', 'database', 'database/weekly', 'database/pre-restore', 'media',
                                    'media/pre-restore', 'config', 'config/pre-restore'])
def test_backup_directory_is_private(host, subdir):
    directory = host.file('%s/%s' % (BACKUP_ROOT, subdir) if subdir else BACKUP_ROOT)
    assert directory.is_directory
    assert directory.user == 'root'
    assert directory.mode == 0o700


def test_cron_service_active(host):
    assert host.service('cron').is_running


@pytest.mark.parametrize('job', sorted(SCHEDULE))
def test_cron_entry_schedule(host, job):
    entries = _cron_entries(host)
    assert job in entries, 'no cron entry for %r; found %s' % (job, entries)
    assert entries[job] == SCHEDULE[job]


def test_command_help_lists_jobs(host):
    output = _run(host, 'env', '-i', 'PATH=/usr/bin:/bin', COMMAND, '--help')
    for job in ('database', 'media', 'config', 'offsite', 'check'):
        assert job in output


@pytest.mark.parametrize('job', JOBS_RUN)
def test_job_run_as_cron_exits_0(host, job):
    results = _job_results(host)
    assert job in results, 'side_effect did not run %r' % job
    record = results[job]
    assert record['rc'] == 0, '%s exited %d\nstdout: %s\nstderr: %s' % (job, record['rc'], record['stdout'],
                                                                        record['stderr'])


def _assert_artifact(host, directory, name):
    """A finished file artifact: 0600, non-empty, with a sidecar that sha256sum -c accepts."""
    artifact = host.file('%s/%s' % (directory, name))
    assert artifact.mode == 0o600
    assert artifact.size > 0
    assert host.file('%s/%s.sha256' % (directory, name)).is_file
    result = host.run('cd %s && sha256sum -c --strict %s' % (_quote(directory), _quote(name + '.sha256')))
    assert result.rc == 0, result.stdout + result.stderr
    assert '%s: OK' % name in result.stdout


def test_daily_dump_verifies(host):
    directory = '%s/database' % BACKUP_ROOT
    dumps = _listing(host, directory, DUMP_NAME)
    assert dumps, 'no dump in %s' % directory
    _assert_artifact(host, directory, dumps[-1])


def test_daily_dump_lists_the_platform_tables(host):
    directory = '%s/database' % BACKUP_ROOT
    name = _listing(host, directory, DUMP_NAME)[-1]
    path = '%s/%s' % (directory, name)
    reader = 'zstd -dc %s | pg_restore -l' % _quote(path) if name.endswith('.zst') else 'pg_restore -l %s' % _quote(path)
    toc = host.run(reader)
    assert toc.rc == 0, toc.stderr
    for table in ('courses', 'students', 'enrollments', 'audit_log'):
        assert re.search(r'TABLE DATA public %s ' % table, toc.stdout), 'no data for %s in %s' % (table, name)


def test_weekly_dump_verifies(host):
    directory = '%s/database/weekly' % BACKUP_ROOT
    dumps = _listing(host, directory, WEEKLY_NAME)
    assert dumps, 'no weekly dump in %s' % directory
    _assert_artifact(host, directory, dumps[-1])


def test_media_snapshot_and_latest(host):
    directory = '%s/media' % BACKUP_ROOT
    snapshots = _listing(host, directory, SNAPSHOT_NAME)
    assert snapshots, 'no media snapshot in %s' % directory
    latest = host.file('%s/latest' % directory)
    assert latest.is_symlink
    assert latest.linked_to == '%s/%s' % (directory, snapshots[-1])
    assert host.file('%s/%s' % (directory, snapshots[-1])).mode == 0o700


def test_media_snapshot_has_the_files(host):
    latest = '%s/media/latest' % BACKUP_ROOT
    found = _run(host, 'find', latest + '/', '-type', 'f', '-printf', '%P %s %u\\n')
    for name, size in (('courses/7/portada.jpg', 262144), ('students/fotos de perfil/0001.png', 1048576)):
        assert re.search(r'(^|/)%s %d ' % (re.escape(name), size), found, re.M), '%s missing in %s:\n%s' % (
            name, latest, found)
    assert 'guía didáctica.md' in found


def test_config_archive_verifies_and_holds_the_files(host):
    directory = '%s/config' % BACKUP_ROOT
    archives = _listing(host, directory, CONFIG_NAME)
    assert archives, 'no config archive in %s' % directory
    _assert_artifact(host, directory, archives[-1])
    members = _run(host, 'tar', '-tzf', '%s/%s' % (directory, archives[-1]))
    assert '.env' in members
    assert 'docker-compose.yml' in members


def test_status_file_is_valid_json(host):
    status = host.file(STATUS_FILE)
    assert status.is_file
    document = json.loads(status.content_string)
    assert isinstance(document, dict) and document
    text = json.dumps(document)
    for job in ('database', 'media', 'config'):
        assert job in text, 'status file does not mention %s: %s' % (job, text)
