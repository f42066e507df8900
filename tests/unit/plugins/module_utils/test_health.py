# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks on crafted backup roots, with the clock injected."""

from __future__ import annotations

import datetime
import json
import os

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, health, job_lock, job_status, layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import server_command
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

NOW = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=datetime.timezone.utc)


def dump(root, hours_ago, size=100000, kind='database'):
    created = NOW - datetime.timedelta(hours=hours_ago)
    if kind == 'config':
        path = os.path.join(root, 'config', layout.config_archive_name(created))
    else:
        path = os.path.join(root, layout.KINDS[kind].subdir, layout.database_dump_name(kind, created))
    artifact.ensure_directory(os.path.dirname(path))
    with artifact.ArtifactWriter(path) as writer:
        writer.write(os.urandom(size))
        writer.commit({'kind': kind, 'created': created.isoformat()})
    return path


def real_hours_ago(hours):
    """dump()'s hours_ago for a dump made ``hours`` before the real clock (health.command reads that, not NOW)."""
    return hours - (layout.utcnow() - NOW).total_seconds() / 3600


def settings(root, **options):
    options.setdefault('kinds', ['database'])
    return health.Settings(dict(options, backup_root=root, status_file=os.path.join(root, 'status.json')))


def verdicts(root, status=None, **options):
    checker = health.HealthCheck(settings(root, **options), status=status or {'jobs': {}}, now=NOW)
    return dict((finding.key, finding) for finding in checker.run())


@pytest.mark.parametrize('hours, severity', [(23.9, 'ok'), (24.1, 'critical'), (100, 'critical')])
def test_freshness_threshold(tmp_path, hours, severity):
    dump(str(tmp_path), hours)
    assert verdicts(str(tmp_path))['freshness:database'].severity == severity


def test_freshness_threshold_is_configurable_and_missing_kind_is_critical(tmp_path):
    dump(str(tmp_path), 30)
    found = verdicts(str(tmp_path), kinds=['database', 'config'], max_age_hours={'database': 36})
    assert found['freshness:database'].severity == 'ok'
    assert found['freshness:config'].severity == 'critical' and 'no complete configuration archive' in \
        found['freshness:config'].message


@pytest.mark.parametrize('previous, newest, severity', [
    ([100000] * 7, 40000, 'warning'),
    ([100000] * 7, 60000, 'ok'),
    ([100000, 100000], 10000 + 65536, None),  # fewer than three previous: no verdict
])
def test_sudden_shrink_against_the_median(tmp_path, previous, newest, severity):
    for index, size in enumerate(previous):
        dump(str(tmp_path), 24 * (len(previous) - index) + 1, size)
    dump(str(tmp_path), 1, newest)
    found = verdicts(str(tmp_path))
    if severity is None:
        assert 'shrink:database' not in found
    else:
        assert found['shrink:database'].severity == severity


def test_minimum_size(tmp_path):
    dump(str(tmp_path), 1, 10)
    found = verdicts(str(tmp_path))
    assert found['size:database'].severity == 'critical' and '10 B' in found['size:database'].message


def test_checksum_newest_only_unless_deep(tmp_path):
    old = dump(str(tmp_path), 25)
    dump(str(tmp_path), 1)
    with open(old, 'r+b') as handle:
        handle.write(b'X')
    assert verdicts(str(tmp_path))['checksum:database'].severity == 'ok'
    deep = verdicts(str(tmp_path), deep=True, verify_workers=2)['checksum:database']
    assert deep.severity == 'critical' and os.path.basename(old) in deep.message
    assert deep.evidence['failed'] == [old] and deep.evidence['verified'] == 2


def test_disk_thresholds(tmp_path):
    dump(str(tmp_path), 1)
    found = verdicts(str(tmp_path), disk_warning_percent=0, disk_critical_percent=100)
    assert found['disk:usage'].severity == 'warning'
    found = verdicts(str(tmp_path), free_space_margin=10 ** 12)
    assert found['disk:next_backup'].severity == 'critical' and 'would not fit' in found['disk:next_backup'].title


def test_failed_job_and_offsite(tmp_path):
    dump(str(tmp_path), 1)
    recent = (NOW - datetime.timedelta(hours=2)).isoformat()
    status = {'jobs': {'media': {'result': 'failed', 'exit_code': 2, 'error': 'rsync exited 23', 'last_run': recent},
                       'offsite': {'result': 'ok', 'last_success': recent}}}
    found = verdicts(str(tmp_path), status=status, offsite=True)
    assert found['job:media'].severity == 'critical' and 'rsync exited 23' in found['job:media'].message
    assert found['freshness:offsite'].severity == 'ok'
    status['jobs']['offsite']['last_success'] = (NOW - datetime.timedelta(hours=27)).isoformat()
    assert verdicts(str(tmp_path), status=status, offsite=True)['freshness:offsite'].severity == 'critical'


def test_stuck_lock_uses_the_usual_duration_and_ignores_dead_holders(tmp_path):
    dump(str(tmp_path), 1)
    path = job_lock.lock_path(str(tmp_path), 'database')
    os.makedirs(os.path.dirname(path))
    started = (NOW - datetime.timedelta(hours=3)).isoformat()
    with open(path, 'w') as handle:
        json.dump({'pid': os.getpid(), 'job': 'database', 'started': started}, handle)
    status = {'jobs': {'database': {'result': 'ok', 'duration': 600}}}
    assert verdicts(str(tmp_path), status=status, stuck_lock_hours=1)['lock:database'].severity == 'warning'
    status['jobs']['database']['duration'] = 3600  # usual 1 h: 4x is 4 h, 3 h is fine
    assert verdicts(str(tmp_path), status=status, stuck_lock_hours=1)['lock:database'].severity == 'ok'
    with open(path, 'w') as handle:
        json.dump({'pid': 2 ** 22 + 12345, 'job': 'database', 'started': started}, handle)
    assert 'lock:database' not in verdicts(str(tmp_path), status=status, stuck_lock_hours=1)


def test_worst_and_exit_codes():
    make = health.Finding
    assert health.exit_code([]) == 0
    assert health.exit_code([make('a', 'b', 'ok', 't', 'm'), make('a', 'c', 'warning', 't', 'm')]) == 1
    assert health.exit_code([make('a', 'b', 'critical', 't', 'm'), make('a', 'c', 'warning', 't', 'm')]) == 2
    with pytest.raises(ValueError):
        make('a', 'b', 'bad', 't', 'm')


@pytest.mark.parametrize('options, text', [
    ({'max_age_hours': {'nightly': 3}}, 'max_age_hours has no entry'),
    ({'kinds': ['tapes']}, 'unknown backup kind'),
    ({'disk_warning_percent': 95, 'disk_critical_percent': 90}, 'must not be above'),
    ({'restore_min_rows': {'courses': 'many'}}, 'whole number'),
    ({'email': {'smtp_host': 'h', 'sender': 's@x', 'recipients': ['r@x'], 'security': 'none', 'password': 'p'}},
     'unencrypted'),
])
def test_bad_settings_are_refused_clearly(tmp_path, options, text):
    with pytest.raises(BackupError, match=text):
        settings(str(tmp_path), **options)


def test_command_exit_codes_and_status_section(tmp_path):
    root = str(tmp_path)
    status_file = os.path.join(root, 'status.json')
    dump(root, real_hours_ago(0))
    assert health.command({'backup_root': root, 'status_file': status_file, 'kinds': ['database']}) in (0, 1)
    assert job_status.load(status_file)['check']['findings']
    lines = []
    code = health.command({'backup_root': root, 'status_file': status_file, 'kinds': ['database', 'config']},
                          log=lines.append)
    assert code == 2 and any('freshness:config' in line for line in lines)
    assert health.command({'backup_root': os.path.join(root, 'missing'), 'status_file': status_file}) == 2


def test_check_mode_writes_nothing(tmp_path):
    root = str(tmp_path / 'root')
    dump(root, real_hours_ago(1))
    result = health.run_check(settings(root), check_mode=True)
    assert result['healthy'] is True and result['changed'] is True
    assert not os.path.exists(os.path.join(root, 'status.json')) and not os.path.exists(os.path.join(root, '.locks'))


class FakeConfig:
    """The parts of server_command.Config that options_from_config reads."""

    def __init__(self, root, check, alerts):
        self.values = {'paths': {'backup_root': root, 'status_file': os.path.join(root, 'status.json')},
                       'database': {'name': 'cepcomunicacion', 'host': '127.0.0.1', 'port': 5432, 'user': 'postgres',
                                    'password': '', 'pg_bin_dir': ''},
                       'offsite': {'enabled': False}}
        self.sections = {'check': check, 'alerts': alerts}

    def __getitem__(self, name):
        return self.values[name]

    def section(self, name):
        return self.sections[name]


def test_run_from_config_maps_the_config_file(tmp_path):
    root = str(tmp_path)
    dump(root, real_hours_ago(30))  # under the 36 h limit by the real clock
    config = FakeConfig(root, {'kinds': 'database', 'max_age_hours_database': '36', 'deep': 'yes',
                               'restore_min_rows': 'courses = 10\npublic.users=1'},
                        {'email_smtp_host': 'smtp.example', 'email_sender': 'b@example.org',
                         'email_recipients': 'a@example.org, c@example.org', 'retries': '0'})
    options = server_command.check_options(config)
    assert options['deep'] is True and options['max_age_hours'] == {'database': '36'}
    assert options['restore_min_rows'] == {'courses': '10', 'public.users': '1'}
    assert options['email']['recipients'] == ['a@example.org', 'c@example.org'] and options['alert_retries'] == '0'
    settings_ = health.Settings(options)
    assert settings_.max_age_hours['database'] == 36.0 and settings_.alerts.retries == 0
    config.sections['alerts'] = {}
    assert health.command(server_command.check_options(config), lambda message: None) in (0, 1)
