# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``cepcomunicacion-backup``: the scheduled front end on the server.

Cron runs this, not a second implementation: it reads the config file the
``backup_server`` role writes, calls the same core the modules call, appends
to ``<log_dir>/backup-<job>.log``, records the outcome in the status file,
and exits 0 (ok), 1 (warning) or 2 (failure), so cron mail and Healthchecks
see a failure.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import json
import os
import random
import sys
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout

DEFAULT_CONFIG = '/etc/cepcomunicacion/backup.conf'
DEFAULT_LOG_DIR = '/var/log/cepcomunicacion'
EXIT_OK, EXIT_WARNING, EXIT_FAILURE = job_status.EXIT_OK, job_status.EXIT_WARNING, job_status.EXIT_FAILURE
JOBS = ('database', 'media', 'config', 'offsite', 'check', 'status', 'validate-config')

HELP_EPILOG = '''jobs:
  database [--weekly]     pg_dump of the database (daily, or this ISO week's long-term dump)
  media                   rsync --link-dest snapshot of the media directories
  config                  tar.gz of the configuration files
  offsite                 push finished backups to the S3-compatible bucket
  check [--restore-test]  health checks and alerts (and a restore test into a scratch database)
  status                  print the status file
  validate-config         check the config file and exit

exit codes:
  0  ok
  1  warning (check found something to look at)
  2  failure (the job failed, or check found a critical problem); the reason is on stderr and in the log
'''

# (section, key) -> (type, default); None default = required when the section is used
SCHEMA = {
    'paths': {'backup_root': (str, layout.DEFAULT_BACKUP_ROOT), 'status_file': (str, job_status.DEFAULT_STATUS_FILE),
              'log_dir': (str, DEFAULT_LOG_DIR)},
    'database': {'name': (str, 'cepcomunicacion'), 'host': (str, '127.0.0.1'), 'port': (int, 5432),
                 'user': (str, 'postgres'), 'password': (str, ''), 'compression': (str, 'auto'),
                 'retention_days': (int, 30), 'retention_weeks': (int, 12), 'lock_timeout': (int, 300),
                 'pg_bin_dir': (str, '')},
    'media': {'paths': (list, []), 'exclude': (list, []), 'retention_days': (int, 30), 'lock_timeout': (int, 300),
              'bwlimit': (int, 0)},
    'config': {'paths': (list, []), 'exclude': (list, []), 'retention_days': (int, 30), 'lock_timeout': (int, 300),
               'skip_unchanged': (bool, False)},
    'offsite': {'enabled': (bool, False), 'bucket': (str, ''), 'prefix': (str, ''), 'endpoint_url': (str, ''),
                'region': (str, ''), 'access_key': (str, ''), 'secret_key': (str, ''), 'session_token': (str, ''),
                'profile': (str, ''), 'validate_certs': (bool, True), 'kinds': (list, []),
                'multipart_threshold': (int, 8), 'multipart_chunksize': (int, 8), 'max_concurrency': (int, 4),
                'bwlimit': (int, 0), 'storage_class': (str, ''), 'server_side_encryption': (str, 'none'),
                'sse_kms_key_id': (str, ''), 'age_recipients': (list, []), 'object_lock_mode': (str, 'governance'),
                'object_lock_days': (int, 0), 'verify_upload': (bool, True), 'lock_timeout': (int, 300)},
    'check': {},
    'alerts': {},
}


class Config:
    """The parsed config file; unknown sections and keys are kept for the jobs that read them."""

    def __init__(self, path):
        self.path = path
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, 'r') as handle:
                parser.read_file(handle)
        except (IOError, OSError) as exc:
            raise BackupError('cannot read the config file %s: %s (the backup_server role writes it)' % (
                path, exc.strerror or exc))
        except configparser.Error as exc:
            raise BackupError('the config file %s is not valid: %s' % (path, str(exc).splitlines()[0]))
        self.parser = parser
        self.values = {}
        for section, keys in SCHEMA.items():
            self.values[section] = {}
            for key, (kind, default) in keys.items():
                self.values[section][key] = self._read(section, key, kind, default)

    def _read(self, section, key, kind, default):
        if not self.parser.has_option(section, key):
            return default
        raw = self.parser.get(section, key)
        try:
            if kind is bool:
                return self.parser.getboolean(section, key)
            if kind is int:
                return int(raw)
            if kind is list:
                return [item.strip() for item in raw.splitlines() if item.strip()]
            return raw.strip()
        except ValueError:
            raise BackupError('%s: [%s] %s = %r is not a valid %s' % (self.path, section, key, raw, kind.__name__))

    def __getitem__(self, section):
        return self.values[section]

    def section(self, name):
        """A section not in SCHEMA (offsite, check, alerts details) as a plain dict."""
        return dict(self.parser.items(name)) if self.parser.has_section(name) else {}


class JobLog:
    """Appends timestamped lines to ``<log_dir>/backup-<job>.log``; echoes progress when interactive."""

    def __init__(self, log_dir, job, interactive):
        self.interactive = interactive
        self.path = os.path.join(log_dir, 'backup-%s.log' % job)
        self.handle = None
        try:
            os.makedirs(log_dir, mode=0o750, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, layout.FILE_MODE)
            self.handle = os.fdopen(fd, 'a')
        except OSError as exc:
            sys.stderr.write('warning: cannot write the log %s: %s\n' % (self.path, exc))

    def __call__(self, message):
        line = '%s [%d] %s' % (datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
                               os.getpid(), message)
        if self.handle:
            self.handle.write(line + '\n')
            self.handle.flush()
        if self.interactive:
            sys.stdout.write(message + '\n')
            sys.stdout.flush()

    def close(self):
        if self.handle:
            self.handle.close()


# --- jobs: each parses config, calls the core, returns (exit code, result dict) -------------------------------

def _connection(config):
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres
    db = config['database']
    return postgres.Connection(db['name'], db['host'], db['port'], db['user'], db['password'] or None,
                               pg_bin_dir=db['pg_bin_dir'] or None)


def job_database(config, args, log):
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_backup
    db = config['database']
    job = database_backup.DatabaseBackup(
        _connection(config), backup_root=config['paths']['backup_root'],
        kind='database_weekly' if args.weekly else 'database', compression=db['compression'],
        retention_days=db['retention_days'], retention_weeks=db['retention_weeks'], lock_timeout=db['lock_timeout'],
        log=log)
    result = job.run()
    if result.get('changed'):
        log('dump %s (%d bytes, sha256 %s) in %.1f s; pruned %d' % (
            result['path'], result['size'], result['sha256'], result['duration'], len(result['pruned'])))
    else:
        log('nothing to do: %s' % result.get('msg', result.get('path')))
    return EXIT_OK, result


def job_media(config, args, log):
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot
    media = config['media']
    if not media['paths']:
        raise BackupError('[media] paths is empty in %s: name the directories to snapshot' % config.path)
    job = media_snapshot.MediaSnapshot(
        media['paths'], backup_root=config['paths']['backup_root'], exclude=media['exclude'],
        retention_days=media['retention_days'], lock_timeout=media['lock_timeout'], bwlimit=media['bwlimit'] or None,
        log=log)
    result = job.run()
    log('snapshot %s: %s files, %s transferred, %s bytes new, %.1f s' % (
        result['snapshot'], result['files_total'], result['files_transferred'], result['new_space'],
        result['duration']))
    return EXIT_OK, result


def job_config(config, args, log):
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import config_archive
    section = config['config']
    if not section['paths']:
        raise BackupError('[config] paths is empty in %s: name the files to archive' % config.path)
    job = config_archive.ConfigBackup(
        section['paths'], backup_root=config['paths']['backup_root'], exclude=section['exclude'],
        retention_days=section['retention_days'], lock_timeout=section['lock_timeout'],
        skip_unchanged=section['skip_unchanged'], log=log)
    result = job.run()
    for missing in result.get('missing', []):
        log('warning: %s does not exist; not archived' % missing)
    log('archive %s' % (result.get('path') or result.get('archive') or 'unchanged'))
    return (EXIT_WARNING if result.get('missing') else EXIT_OK), result


def job_offsite(config, args, log):
    section = config['offsite']
    if not section['enabled']:
        log('offsite copies are disabled ([offsite] enabled = false); nothing to do')
        return EXIT_OK, {'changed': False, 'skipped': True}
    if not section['bucket']:
        raise BackupError('[offsite] bucket is not set in %s: name the bucket (and endpoint_url, prefix)' % config.path)
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import offsite

    def optional(key):
        return section[key] or None
    settings = offsite.S3Settings(section['bucket'], optional('prefix'), optional('endpoint_url'), optional('region'),
                                  optional('access_key'), optional('secret_key'), optional('session_token'),
                                  optional('profile'), section['validate_certs'])
    job = offsite.OffsiteSync(
        settings, backup_root=config['paths']['backup_root'], kinds=section['kinds'] or offsite.KINDS,
        transfer=offsite.Transfer(section['multipart_threshold'], section['multipart_chunksize'],
                                  section['max_concurrency'], section['bwlimit'] or None),
        storage_class=optional('storage_class'), server_side_encryption=section['server_side_encryption'],
        sse_kms_key_id=optional('sse_kms_key_id'), age_recipients=section['age_recipients'],
        object_lock_mode=section['object_lock_mode'], object_lock_days=section['object_lock_days'],
        verify_upload=section['verify_upload'], lock_timeout=section['lock_timeout'], log=log)
    result = job.push()
    log('offsite push to s3://%s/%s/: %d artifacts, %d objects, %d bytes uploaded; %d already offsite; %d aborted '
        'uploads; %.1f s' % (settings.bucket, settings.prefix, len(result['uploaded']), result['objects_uploaded'],
                             result['bytes_uploaded'], len(result['already_offsite']), len(result['aborted_uploads']),
                             result['duration']))
    for warning in result['warnings']:
        log('warning: %s' % warning)
    return (EXIT_WARNING if result['warnings'] else EXIT_OK), result


def _config_flag(value):
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on')


def _config_lines(value):
    return [item.strip() for item in str(value).replace(',', '\n').splitlines() if item.strip()]


def check_options(config, restore_test=False):
    """Module-style options from the server's config file (``server_command.Config``).

    ``[paths]``, ``[database]`` and ``[offsite] enabled`` are shared with the backup jobs.  ``[check]`` takes the
    module's option names (``deep``, ``kinds``, ``shrink_ratio``, ``metrics_file`` ...), per-kind thresholds as
    ``max_age_hours_<kind>`` and ``min_size_<kind>``, ``restore_sanity_sql`` one statement per line and
    ``restore_min_rows`` as ``table = rows`` lines.  ``[alerts]`` takes ``email_<suboption>`` (``email_smtp_host``,
    ``email_password``, ``email_recipients`` ...), ``slack_webhook_url``, ``discord_webhook_url``,
    ``healthchecks_url``, ``renotify_hours``, ``alert_severity``, ``retries``, ``retry_delay``,
    ``max_retry_delay`` and ``timeout``.
    """
    paths, database = config['paths'], config['database']
    check, alert = config.section('check'), config.section('alerts')
    options = {'backup_root': paths['backup_root'], 'status_file': paths['status_file'],
               'database': database['name'], 'login_host': database['host'], 'login_port': database['port'],
               'login_user': database['user'], 'login_password': database['password'] or None,
               'pg_bin_dir': database['pg_bin_dir'] or None, 'offsite': bool(config['offsite']['enabled'])}
    ages, sizes = {}, {}
    for key, value in check.items():
        if key.startswith('max_age_hours_'):
            ages[key[len('max_age_hours_'):]] = value
        elif key.startswith('min_size_'):
            sizes[key[len('min_size_'):]] = value
        elif key in ('deep', 'restore_test'):
            options[key] = _config_flag(value)
        elif key in ('kinds', 'restore_sanity_sql'):
            options[key] = _config_lines(value) if key == 'kinds' else [
                line.strip() for line in value.splitlines() if line.strip()]
        elif key == 'restore_min_rows':
            options[key] = dict((name.strip(), count.strip()) for name, _sep, count in
                                (line.partition('=') for line in value.splitlines() if line.strip()))
        else:
            options[key] = value
    options.update(max_age_hours=ages, min_size=sizes)
    options['restore_test'] = bool(restore_test or options.get('restore_test'))
    email = {}
    renamed = {'retries': 'alert_retries', 'retry_delay': 'alert_retry_delay',
               'max_retry_delay': 'alert_max_retry_delay', 'timeout': 'alert_timeout'}
    for key, value in alert.items():
        if key.startswith('email_'):
            name = key[len('email_'):]
            email[name] = _config_lines(value) if name == 'recipients' else (
                _config_flag(value) if name == 'validate_certs' else value)
        else:
            options[renamed.get(key, key)] = value or None
    if email.get('smtp_host'):
        options['email'] = email
    return options


def job_check(config, args, log):
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import health
    # the check records its own section of the status file (and its alerts' state)
    return health.command(check_options(config, args.restore_test), log), {'changed': False}


JOB_FUNCTIONS = {'database': job_database, 'media': job_media, 'config': job_config, 'offsite': job_offsite,
                 'check': job_check}


def parser():
    result = argparse.ArgumentParser(
        prog='cepcomunicacion-backup', description='Backups of the cepcomunicacion platform (scheduled front end of '
        'the cepcomunicacion.backup collection).', epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    result.add_argument('--config', default=DEFAULT_CONFIG, help='config file (default %(default)s)')
    result.add_argument('--jitter', type=int, default=0, metavar='SECONDS',
                        help='sleep a random 0..SECONDS first, so many servers do not start at once')
    result.add_argument('--quiet', action='store_true', help='no progress on stdout even on a terminal')
    result.add_argument('job', choices=JOBS)
    result.add_argument('--weekly', action='store_true', help='database: the weekly long-term dump')
    result.add_argument('--restore-test', action='store_true', help='check: also restore the newest dump into a '
                        'scratch database')
    return result


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        config = Config(args.config)
    except BackupError as exc:
        sys.stderr.write('cepcomunicacion-backup: %s\n' % exc)
        return EXIT_FAILURE
    if args.job == 'validate-config':
        sys.stdout.write('%s: ok\n' % args.config)
        return EXIT_OK
    paths = config['paths']
    if args.job == 'status':
        sys.stdout.write(json.dumps(job_status.load(paths['status_file']), indent=2, sort_keys=True) + '\n')
        return EXIT_OK
    if args.jitter > 0:
        time.sleep(random.SystemRandom().uniform(0, args.jitter))
    name = 'database_weekly' if (args.job == 'database' and args.weekly) else args.job
    log = JobLog(paths['log_dir'], args.job, sys.stdout.isatty() and not args.quiet)
    log('start %s (config %s)' % (name, args.config))
    code = EXIT_FAILURE
    recorder = job_status.recording(paths['status_file'] if args.job != 'check' else None, name)
    try:
        with recorder:
            code, recorder.result = JOB_FUNCTIONS[args.job](config, args, log)
        if recorder.status_error:
            log('warning: %s' % recorder.status_error)
        log('end %s: exit %d' % (name, code))
    except BackupError as exc:
        log('FAILED %s: %s' % (name, exc))
        sys.stderr.write('cepcomunicacion-backup %s failed: %s\n' % (name, exc))
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        log('interrupted %s' % name)
        code = EXIT_FAILURE
    finally:
        log.close()
    return code
