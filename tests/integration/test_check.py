# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_check through ansible-playbook: every check trips on a crafted backup root, alerts reach real peers.

The SMTP server (STARTTLS + AUTH) and the webhook receiver are started by
alert_peers on 127.0.0.1; PostgreSQL is the suite's throwaway cluster.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import DATABASE
from alert_peers import SMTP_PASSWORD, smtp_server, webhooks  # noqa: F401  pylint: disable=unused-import

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, job_lock, job_status, layout

HOST = 'web1.example.org'
KINDS = ['database', 'database_weekly', 'config']
DUMP_SIZE = 200 * 1024


def write_artifact(path, created, size, kind):
    directory = os.path.dirname(path)
    artifact.ensure_directory(directory)
    with artifact.ArtifactWriter(path) as writer:
        writer.write(os.urandom(size))
        writer.commit({'kind': kind, 'created': created.isoformat(), 'duration': 2.5})
    return path


def craft_root(root, newest_age_hours=1.0, newest_size=DUMP_SIZE, dumps=8, size=DUMP_SIZE):
    """A backup root: ``dumps`` daily dumps a day apart (newest ``newest_age_hours`` old), a weekly, a config."""
    now = layout.utcnow()
    paths = []
    for index in range(dumps):
        created = now - datetime.timedelta(hours=newest_age_hours + 24 * (dumps - 1 - index))
        path = os.path.join(root, 'database', layout.database_dump_name('database', created))
        paths.append(write_artifact(path, created, newest_size if index == dumps - 1 else size, 'database'))
    weekly = now - datetime.timedelta(days=2)
    write_artifact(os.path.join(root, 'database', 'weekly', layout.database_dump_name('database_weekly', weekly)),
                   weekly, size, 'database_weekly')
    config = now - datetime.timedelta(hours=1)
    write_artifact(os.path.join(root, 'config', layout.config_archive_name(config)), config, 4096, 'config')
    return paths


def flip_byte(path):
    offset = os.path.getsize(path) // 2
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def by_key(result):
    return dict((finding['key'], finding) for finding in result['findings'])


def problems(result):
    return dict((f['key'], f['severity']) for f in result['findings'] if f['severity'] != 'ok')


@pytest.fixture
def root(tmp_path):
    path = str(tmp_path / 'backups')
    os.makedirs(path)
    return path


@pytest.fixture
def check_args(ansible, root):
    return {'backup_root': root, 'status_file': ansible.status_file, 'kinds': KINDS, 'host_label': HOST,
            'alert_retry_delay': 0.05, 'alert_max_retry_delay': 5, 'alert_timeout': 5}


# --- the checks -------------------------------------------------------------------------------------

def test_healthy_root_is_ok_and_a_second_run_changes_nothing(ansible, root, check_args):
    craft_root(root)
    first = ansible.run('backup_check', check_args)
    assert first['healthy'] is True and first['exit_code'] == 0, problems(first)
    assert first['changed'] is True  # the status file gained its check section
    keys = by_key(first)
    for key in ('freshness:database', 'freshness:database_weekly', 'freshness:config', 'size:database',
                'shrink:database', 'checksum:database', 'disk:usage', 'disk:next_backup'):
        assert keys[key]['severity'] == 'ok', key
    before = os.stat(ansible.status_file).st_mtime_ns
    predicted = ansible.run('backup_check', check_args, check=True)
    assert predicted['changed'] is False and predicted['healthy'] is True
    assert os.stat(ansible.status_file).st_mtime_ns == before, 'check mode wrote the status file'
    second = ansible.run('backup_check', check_args)
    assert second['changed'] is False and second['healthy'] is True
    status = ansible.status()
    assert status['check']['health'] == 'ok' and status['check']['kinds']['database']['count'] == 8


def _stale(root, status_file):
    craft_root(root, newest_age_hours=30)
    return 'freshness:database', 'critical', ['30.0 h ago', 'limit is 24.0 h', 'pg_backup']


def _tiny(root, status_file):
    craft_root(root, newest_size=100)
    return 'size:database', 'critical', ['100 B', 'below the minimum of 64.0 KiB']


def _shrunk(root, status_file):
    craft_root(root, newest_size=70 * 1024)
    return 'shrink:database', 'warning', ['less than 50% of the median of the previous 7', '200.0 KiB']


def _flipped(root, status_file):
    flip_byte(craft_root(root)[-1])
    return 'checksum:database', 'critical', ['mismatch', 'do not restore']


def _missing_offsite(root, status_file):
    craft_root(root)
    return 'freshness:offsite', 'critical', ['no successful offsite copy', 'offsite_sync']


def _stale_offsite(root, status_file):
    craft_root(root)
    last = (layout.utcnow() - datetime.timedelta(hours=30)).isoformat()

    def change(document):
        document['jobs']['offsite'] = {'result': 'ok', 'exit_code': 0, 'last_run': last, 'last_success': last}
    job_status.update(status_file, change)
    return 'freshness:offsite', 'critical', ['30.0 h ago', 'limit is 26.0 h']


def _failed_job(root, status_file):
    craft_root(root)
    try:
        with job_status.recording(status_file, 'config'):
            raise artifact.BackupError('no space left on the backup filesystem writing config_x.tar.gz')
    except artifact.BackupError:
        pass
    return 'job:config', 'critical', ['exit status 2', 'no space left on the backup filesystem']


def _stuck_lock(root, status_file):
    craft_root(root)
    path = job_lock.lock_path(root, 'media')
    os.makedirs(os.path.dirname(path))
    started = (layout.utcnow() - datetime.timedelta(hours=10)).isoformat()
    with open(path, 'w') as handle:
        json.dump({'pid': os.getpid(), 'job': 'media', 'started': started}, handle)
    return 'lock:media', 'warning', ['held by PID %d' % os.getpid(), '10.0 h']


@pytest.mark.parametrize('craft', [_stale, _tiny, _shrunk, _flipped, _missing_offsite, _stale_offsite, _failed_job,
                                   _stuck_lock], ids=lambda craft: craft.__name__.strip('_'))
def test_each_check_trips_on_a_crafted_root(ansible, root, check_args, craft):
    key, severity, evidence = craft(root, ansible.status_file)
    args = dict(check_args, offsite='offsite' in key)
    result = ansible.run('backup_check', args)
    found = by_key(result)
    assert key in found, result['findings']
    assert found[key]['severity'] == severity, found[key]
    for text in evidence:
        assert text in found[key]['message'], found[key]['message']
    assert 'Next step:' in found[key]['message']
    assert result['healthy'] is False and result['exit_code'] == {'warning': 1, 'critical': 2}[severity]
    others = dict((k, v) for k, v in problems(result).items() if k != key and not k.startswith('shrink:'))
    assert not others, 'only the crafted problem should trip: %s' % others
    recorded = ansible.status()['check']
    assert recorded['health'] == severity and key in [item['key'] for item in recorded['findings']]


@pytest.mark.skipif(os.geteuid() != 0, reason='mounting a tmpfs needs root')
def test_full_disk_is_critical_and_says_the_next_backup_would_not_fit(ansible, tmp_path, check_args):
    mount = str(tmp_path / 'small')
    os.makedirs(mount)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mount], check=True)
    try:
        craft_root(mount, size=2 * 1024 * 1024, newest_size=2 * 1024 * 1024, dumps=3)
        free = artifact.free_bytes(mount)
        with open(os.path.join(mount, 'filler'), 'wb') as handle:
            handle.write(b'\0' * (free - 1024 * 1024))
        result = ansible.run('backup_check', dict(check_args, backup_root=mount))
        found = by_key(result)
        assert found['disk:usage']['severity'] == 'critical', found['disk:usage']
        assert '% full' in found['disk:usage']['message'] and mount in found['disk:usage']['message']
        assert found['disk:next_backup']['severity'] == 'critical'
        assert 'database dump 2.0 MiB' in found['disk:next_backup']['message']
        assert result['exit_code'] == 2
    finally:
        subprocess.run(['umount', mount], check=False)


# --- the restore test --------------------------------------------------------------------------------

def scratch_databases(pg):
    return [name for name in pg.psql('SELECT datname FROM pg_database').split() if '__restore_' in name]


def test_restore_test_restores_the_newest_dump_and_a_broken_one_is_critical(pg, ansible, conn_args, root, check_args):
    dump = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))
    assert dump['changed'], dump['_output']
    args = dict(check_args, **conn_args, kinds=['database'], restore_test=True, database=DATABASE,
                restore_min_rows={'courses': 1, 'public.enrollments': 1},
                restore_sanity_sql=['SELECT count(*) > 0 FROM students'], min_size={'database': 1024})
    good = ansible.run('backup_check', args)
    finding = by_key(good)['restore_test:database']
    assert finding['severity'] == 'ok', finding
    assert good['restore_test']['result'] == 'ok' and good['restore_test']['backup'] == dump['path']
    assert good['restore_test']['row_counts']['courses'] > 0 and good['restore_test']['tables'] >= 5
    assert not scratch_databases(pg), 'the scratch database was left behind'

    too_few = ansible.run('backup_check', dict(args, restore_min_rows={'courses': 10 ** 9}))
    assert 'courses has' in by_key(too_few)['restore_test:database']['message']
    assert by_key(too_few)['restore_test:database']['severity'] == 'critical'

    # a newer dump whose sidecar matches but which pg_restore cannot restore (cut short, then re-checksummed)
    created = layout.utcnow()
    broken = os.path.join(root, 'database', layout.database_dump_name('database', created))
    with open(dump['path'], 'rb') as handle:
        data = handle.read()
    with artifact.ArtifactWriter(broken) as writer:
        writer.write(data[:int(len(data) * 0.6)])
        writer.commit({'kind': 'database', 'created': created.isoformat()})
    bad = ansible.run('backup_check', args)
    found = by_key(bad)
    assert found['checksum:database']['severity'] == 'ok', 'the broken dump matches its sidecar'
    assert found['restore_test:database']['severity'] == 'critical', found['restore_test:database']
    assert broken in found['restore_test:database']['message']
    assert 'whatever its checksum says' in found['restore_test:database']['message']
    assert bad['exit_code'] == 2 and ansible.status()['check']['restore_test']['result'] == 'failed'
    assert not scratch_databases(pg), 'the scratch database was left behind'


def test_backups_made_by_the_modules_are_healthy(pg, ansible, conn_args, root, check_args, tmp_path):
    media = tmp_path / 'media-src'
    (media / 'uploads').mkdir(parents=True)
    (media / 'uploads' / 'a.jpg').write_bytes(os.urandom(4096))
    etc = tmp_path / 'etc-app'
    etc.mkdir()
    (etc / 'app.conf').write_text('listen = 8080\n' * 100)
    status = {'status_file': ansible.status_file}
    assert ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))['changed']
    assert ansible.run('media_backup', dict(status, src=[str(media)], backup_root=root))['changed']
    assert ansible.run('config_backup', dict(status, paths=[str(etc)], backup_root=root))['changed']
    result = ansible.run('backup_check', dict(check_args, kinds=['database', 'media', 'config'], deep=True,
                                              min_size={'database': 1024, 'config': 100}))
    assert result['healthy'] is True, problems(result)
    found = by_key(result)
    for key in ('checksum:database', 'checksum:media', 'checksum:config', 'job:database', 'job:media', 'job:config'):
        assert found[key]['severity'] == 'ok', key


# --- alerts -------------------------------------------------------------------------------------------

def alert_args(check_args, smtp_server, webhooks, password=SMTP_PASSWORD):
    return dict(check_args, email=smtp_server.email_options(password=password),
                slack_webhook_url=webhooks.base + '/slack/services/T000/B000/slack-secret-token',
                discord_webhook_url=webhooks.base + '/discord/api/webhooks/42/discord-secret-token',
                healthchecks_url=webhooks.base + '/hc/5f1c0c7e-hc-secret-uuid')


SECRETS = (SMTP_PASSWORD, 'slack-secret-token', 'discord-secret-token', 'hc-secret-uuid')


def test_alerts_reach_every_channel_then_resolve(ansible, root, check_args, smtp_server, webhooks):
    craft_root(root, newest_age_hours=30)
    args = alert_args(check_args, smtp_server, webhooks)
    result = ansible.run('backup_check', args)
    assert result['exit_code'] == 2 and not result['alert_failures'], result['alert_failures']
    assert sorted(item['channel'] for item in result['alerts_sent']) == ['discord', 'email', 'slack']

    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert mail['authenticated'] and mail['to'] == ['ops@example.org']
    assert HOST in mail['subject'] and 'CRITICAL' in mail['subject'] and 'stale daily database dump' in mail['subject']
    assert HOST in mail['body'] and 'freshness:database' in mail['body'] and '30.0 h ago' in mail['body']
    assert 'Next step:' in mail['body']

    slack = webhooks.to('/slack')
    assert len(slack) == 1 and set(slack[0]['json']) == {'text'} and HOST in slack[0]['json']['text']
    assert slack[0]['path'] == '/slack/services/T000/B000/slack-secret-token'
    discord = webhooks.to('/discord')
    assert len(discord) == 1 and isinstance(discord[0]['json']['content'], str)
    assert len(discord[0]['json']['content']) <= 2000 and HOST in discord[0]['json']['content']
    assert discord[0]['json']['allowed_mentions'] == {'parse': []}

    pings = webhooks.to('/hc')
    assert [ping['path'] for ping in pings] == ['/hc/5f1c0c7e-hc-secret-uuid/start', '/hc/5f1c0c7e-hc-secret-uuid/2']
    assert pings[0]['query'] == pings[1]['query'] and pings[0]['query'].startswith('rid=')
    assert b'freshness:database' in pings[1]['body']

    # the problem is fixed: Healthchecks gets success, every channel gets one "resolved"
    now = layout.utcnow()
    write_artifact(os.path.join(root, 'database', layout.database_dump_name('database', now)), now, DUMP_SIZE,
                   'database')
    fixed = ansible.run('backup_check', args)
    assert fixed['healthy'] is True and fixed['changed'] is True, problems(fixed)
    pings = webhooks.to('/hc')
    assert [ping['path'] for ping in pings[2:]] == ['/hc/5f1c0c7e-hc-secret-uuid/start', '/hc/5f1c0c7e-hc-secret-uuid']
    assert len(smtp_server.messages) == 2 and 'RESOLVED' in smtp_server.messages[1]['subject']
    assert HOST in smtp_server.messages[1]['subject']
    assert 'RESOLVED' in webhooks.to('/slack')[1]['json']['text']
    assert 'RESOLVED' in webhooks.to('/discord')[1]['json']['content']

    with open(ansible.status_file) as handle:
        status_text = handle.read()
    for secret in SECRETS:
        assert secret not in status_text, 'a secret reached the status file'
        assert secret not in result['_output'] and secret not in fixed['_output'], 'a secret reached the output'
        assert secret not in json.dumps({k: v for k, v in result.items() if k != '_output'})


def test_wrong_smtp_password_is_recorded_and_other_channels_still_deliver(ansible, root, check_args, smtp_server,
                                                                          webhooks):
    craft_root(root, newest_age_hours=30)
    args = alert_args(check_args, smtp_server, webhooks, password='not-the-password')
    result = ansible.run('backup_check', args)
    failures = dict((item['channel'], item) for item in result['alert_failures'])
    assert set(failures) == {'email'}
    assert 'refused the login' in failures['email']['error'] and 'email.password' in failures['email']['error']
    assert failures['email']['attempts'] == 1, 'a refused login is permanent: not retried'
    assert 'not-the-password' not in json.dumps(failures)
    # one connection: smtplib tries each mechanism the server offers (PLAIN, LOGIN) once, then gives up
    assert smtp_server.messages == [] and 1 <= smtp_server.mailbox.auth_failures <= 2
    assert sorted(item['channel'] for item in result['alerts_sent']) == ['discord', 'slack']
    assert len(webhooks.to('/slack')) == 1 and len(webhooks.to('/discord')) == 1
    alerts = ansible.status()['check']['alerts']
    assert alerts['failures'][-1]['channel'] == 'email' and 'refused the login' in alerts['failures'][-1]['error']
    assert alerts['last_delivery']['email']['delivered'] is False
    assert 'alert via email failed' in result['_output']  # the module warns
    # the email channel was never told: it is due again next run; the delivered channels are not
    again = ansible.run('backup_check', args)
    assert [item['channel'] for item in again['alerts_due']] == ['email']
    assert len(webhooks.to('/slack')) == 1


def test_rate_limit_is_honoured_and_a_failing_webhook_is_retried_then_recorded(ansible, root, check_args, webhooks):
    craft_root(root, newest_age_hours=30)
    webhooks.answer('/slack', 429, {'Retry-After': '1'}, b'rate limited')
    for _attempt in range(4):
        webhooks.answer('/discord', 500, {}, b'oops')
    args = dict(check_args, slack_webhook_url=webhooks.base + '/slack/hook',
                discord_webhook_url=webhooks.base + '/discord/hook', alert_retries=3)
    result = ansible.run('backup_check', args)
    slack = webhooks.to('/slack')
    assert [request['status'] for request in slack] == [429, 200]
    assert slack[1]['time'] - slack[0]['time'] >= 0.95, 'Retry-After: 1 was not honoured'
    sent = dict((item['channel'], item) for item in result['alerts_sent'])
    assert sent['slack']['attempts'] == 2
    discord = webhooks.to('/discord')
    assert [request['status'] for request in discord] == [500] * 4, 'three retries after the first attempt'
    failure = result['alert_failures'][0]
    assert failure['channel'] == 'discord' and failure['attempts'] == 4 and 'HTTP 500' in failure['error']
    assert ansible.status()['check']['alerts']['failures'][-1]['channel'] == 'discord'


def test_same_problem_alerts_once_over_three_runs_then_one_resolved(ansible, root, check_args, webhooks):
    craft_root(root, newest_age_hours=30)
    args = dict(check_args, slack_webhook_url=webhooks.base + '/slack/hook')
    results = [ansible.run('backup_check', args) for _run in range(3)]
    assert len(webhooks.to('/slack')) == 1, 'the same finding alerted more than once'
    assert [len(result['alerts_sent']) for result in results] == [1, 0, 0]
    assert [result['changed'] for result in results] == [True, False, False]
    active = ansible.status()['check']['alerts']['active']
    assert list(active) == ['freshness:database'] and 'slack' in active['freshness:database']['notified']

    now = layout.utcnow()
    write_artifact(os.path.join(root, 'database', layout.database_dump_name('database', now)), now, DUMP_SIZE,
                   'database')
    for _run in range(2):
        ansible.run('backup_check', args)
    slack = webhooks.to('/slack')
    assert len(slack) == 2, 'expected exactly one "resolved" message'
    assert 'RESOLVED' in slack[1]['json']['text'] and 'stale daily database dump' in slack[1]['json']['text']
    assert ansible.status()['check']['alerts']['active'] == {}


# --- status file and metrics ----------------------------------------------------------------------------

def test_status_file_is_json_and_the_textfile_is_valid_prometheus(ansible, root, check_args, tmp_path):
    paths = craft_root(root, newest_age_hours=30)
    metrics_file = str(tmp_path / 'textfile' / 'cepcomunicacion_backup.prom')
    result = ansible.run('backup_check', dict(check_args, metrics_file=metrics_file))
    assert result['metrics_file'] == metrics_file
    with open(ansible.status_file) as handle:
        status = json.load(handle)
    assert status['check']['health'] == 'critical' and status['check']['exit_code'] == 2
    assert status['check']['kinds']['database']['newest'] == paths[-1]
    assert os.stat(metrics_file).st_mode & 0o777 == 0o644
    with open(metrics_file) as handle:
        families = dict((family.name, family) for family in text_string_to_metric_families(handle.read()))
    samples = dict(((sample.name, tuple(sorted(sample.labels.items()))), sample.value)
                   for family in families.values() for sample in family.samples)
    created = artifact.read_metadata(paths[-1])['created']
    expected = layout.parse_time(created).replace(microsecond=0).timestamp()
    assert samples[('cepcomunicacion_backup_last_success_timestamp_seconds', (('kind', 'database'),))] == expected
    assert samples[('cepcomunicacion_backup_size_bytes', (('kind', 'database'),))] == DUMP_SIZE
    assert samples[('cepcomunicacion_backup_duration_seconds', (('kind', 'database'),))] == 2.5
    assert samples[('cepcomunicacion_backup_health_status', ())] == 2
    assert samples[('cepcomunicacion_backup_healthy', ())] == 0
    assert samples[('cepcomunicacion_backup_check_findings', (('severity', 'critical'),))] == 1
    assert all(family.type == 'gauge' for family in families.values())
    leftovers = [name for name in os.listdir(os.path.dirname(metrics_file)) if name != 'cepcomunicacion_backup.prom']
    assert leftovers == [], 'temporary files left beside the textfile'
    shutil.rmtree(os.path.dirname(metrics_file))
