# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup_server role and the cepcomunicacion-backup command, on this machine under a temp prefix.

playbooks/install.yml runs against localhost with every path moved under the prefix (packages are
already here: backup_server_manage_packages=false); then the installed command runs as cron would.
The real-server proof (packages, /etc paths, cron daemon) is the Molecule default scenario.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from conftest import COLLECTIONS, DATABASE, REPO, pgcluster, prefix_variables
from s3_peer import TEST_KEY, TEST_SECRET, s3_client

CRON_ENV = {'PATH': '/usr/bin:/bin'}  # what cron gives a job: no TTY, almost no environment


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def prefix(tmp_path, pg):
    root = tmp_path / 'server'
    (root / 'app' / 'uploads' / 'user1').mkdir(parents=True)
    (root / 'app' / 'uploads' / 'user1' / 'photo.jpg').write_bytes(os.urandom(2048))
    (root / 'app' / '.env').write_text('DATABASE_URL=postgres://app@db/cepcomunicacion\n')
    variables = dict(prefix_variables(root), **{
        'backup_server_db_port': pg.port,
        'backup_server_db_name': DATABASE,
        'backup_server_media_paths': [str(root / 'app' / 'uploads')],
        'backup_server_config_paths': [str(root / 'app' / '.env')],
    })
    vars_file = tmp_path / 'vars.json'
    vars_file.write_text(json.dumps(variables))
    return root, variables, str(vars_file)


def playbook(name, vars_file, *extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR='1')
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
            os.path.join(REPO, 'playbooks', name), '-e', '@' + vars_file] + list(extra)
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          timeout=600)
    return proc.returncode, proc.stdout


def recap(output):
    match = re.search(r'localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', output)
    return {'ok': int(match.group(1)), 'changed': int(match.group(2)), 'failed': int(match.group(4))}


def command(variables, *args):
    return subprocess.run([variables['backup_server_command_link'], '--config', variables['backup_server_config_file']]
                          + list(args), env=CRON_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False, timeout=300)


def test_install_is_idempotent_and_the_command_works_as_cron_runs_it(prefix):
    root, variables, vars_file = prefix
    code, output = playbook('install.yml', vars_file, '--check')
    assert code == 0, output
    assert not os.path.exists(variables['backup_server_config_file']), 'check mode wrote the config'
    code, output = playbook('install.yml', vars_file)
    assert code == 0, output
    assert recap(output)['changed'] > 0
    code, output = playbook('install.yml', vars_file)
    assert code == 0, output
    assert recap(output)['changed'] == 0, 'the second run changed something:\n' + output

    config = variables['backup_server_config_file']
    assert mode(config) == 0o600
    for sub in ('', 'database', 'database/weekly', 'media', 'config', 'database/pre-restore'):
        assert mode(os.path.join(variables['backup_server_root'], sub)) == 0o700, sub
    command_path = os.path.realpath(variables['backup_server_command_link'])
    assert not mode(command_path) & 0o022, 'the command must not be group- or world-writable'

    cron = open(variables['backup_server_cron_file']).read()
    for when, job in (('0 2 * * *', 'database'), ('30 2 * * *', 'config'), ('0 3 * * *', 'media'),
                      ('30 3 * * 0', 'database --weekly'), ('0 */6 * * *', 'check')):
        assert re.search(r'^%s root .* %s >/dev/null' % (re.escape(when), re.escape(job)), cron, re.M), (when, cron)

    helped = subprocess.run([command_path, '--help'], env=CRON_ENV, stdout=subprocess.PIPE, text=True, check=False)
    assert helped.returncode == 0
    for word in ('database [--weekly]', 'media', 'config', 'offsite', 'check [--restore-test]', 'exit codes',
                 '2  failure'):
        assert word in helped.stdout

    for job in (['database'], ['database', '--weekly'], ['media'], ['config']):
        run = command(variables, *job)
        assert run.returncode == 0, (job, run.stdout, run.stderr)
        assert run.stdout == '', 'no TTY: the command must be quiet'
    dumps = [n for n in os.listdir(os.path.join(variables['backup_server_root'], 'database')) if n.endswith('.dump')]
    assert len(dumps) == 1
    check = subprocess.run(['sha256sum', '-c', dumps[0] + '.sha256'], cwd=os.path.join(
        variables['backup_server_root'], 'database'), capture_output=True, check=False)
    assert check.returncode == 0
    assert os.path.islink(os.path.join(variables['backup_server_root'], 'media', 'latest'))
    status = json.load(open(variables['backup_server_status_file']))
    assert {job: status['jobs'][job]['result'] for job in ('database', 'database_weekly', 'media', 'config')} == {
        'database': 'ok', 'database_weekly': 'ok', 'media': 'ok', 'config': 'ok'}
    log = open(os.path.join(variables['backup_server_log_dir'], 'backup-database.log')).read()
    assert 'start database' in log and 'end database: exit 0' in log

    code, output = playbook('install.yml', vars_file, '-e', 'backup_server_state=absent')
    assert code == 0, output
    assert not os.path.exists(variables['backup_server_cron_file'])
    assert not os.path.exists(variables['backup_server_command_link'])
    assert not os.path.exists(config)
    assert os.path.exists(os.path.join(variables['backup_server_root'], 'database', dumps[0])), 'backups must stay'


def test_failing_job_exits_2_logs_why_and_updates_status(prefix):
    root, variables, vars_file = prefix
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    down_port = cluster.port
    cluster.destroy()
    code, output = playbook('install.yml', vars_file, '-e', 'backup_server_db_port=%d' % down_port)
    assert code == 0, output
    run = command(variables, 'database')
    assert run.returncode == 2
    assert 'cannot connect to PostgreSQL at 127.0.0.1:%d' % down_port in run.stderr
    log = open(os.path.join(variables['backup_server_log_dir'], 'backup-database.log')).read()
    assert 'FAILED database: cannot connect to PostgreSQL' in log
    entry = json.load(open(variables['backup_server_status_file']))['jobs']['database']
    assert (entry['result'], entry['exit_code']) == ('failed', 2)
    check = command(variables, 'check')
    assert check.returncode == 2, check.stderr
    findings = json.load(open(variables['backup_server_status_file']))['check']['findings']
    failed = [f for f in findings if f['severity'] == 'critical' and 'database' in f['key'] and
              'cannot connect to PostgreSQL' in f['message']]
    assert failed, findings
    check_log = open(os.path.join(variables['backup_server_log_dir'], 'backup-check.log')).read()
    assert 'CRITICAL' in check_log


def test_bad_config_is_refused_by_validation(prefix, tmp_path):
    root, variables, vars_file = prefix
    code, output = playbook('install.yml', vars_file)
    assert code == 0, output
    bad = tmp_path / 'bad.conf'
    bad.write_text('[database]\nport = not-a-number\n')
    run = subprocess.run([variables['backup_server_command_link'], '--config', str(bad), 'validate-config'],
                         env=CRON_ENV, capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "[database] port = 'not-a-number' is not a valid int" in run.stderr
    missing = command(dict(variables, backup_server_config_file=str(tmp_path / 'absent.conf')), 'database')
    assert missing.returncode == 2 and 'cannot read the config file' in missing.stderr


def test_offsite_job_pushes_with_credentials_from_the_config_file(prefix, s3_server, bucket):
    root, variables, vars_file = prefix
    extra = {'backup_server_offsite_enabled': True, 'backup_server_offsite_bucket': bucket,
             'backup_server_offsite_prefix': 'web1', 'backup_server_offsite_endpoint_url': s3_server,
             'backup_server_offsite_region': 'us-east-1', 'backup_server_offsite_access_key': TEST_KEY,
             'backup_server_offsite_secret_key': TEST_SECRET}
    extra_file = os.path.join(str(root), '..', 'offsite.json')
    with open(extra_file, 'w') as handle:
        json.dump(extra, handle)
    code, output = playbook('install.yml', vars_file, '-e', '@' + extra_file)
    assert code == 0, output
    assert TEST_SECRET not in output
    cron = open(variables['backup_server_cron_file']).read()
    assert re.search(r'^0 4 \* \* \* root .* offsite >/dev/null', cron, re.M), cron
    assert command(variables, 'database').returncode == 0
    run = command(variables, 'offsite')
    assert run.returncode == 0, run.stderr
    keys = [item['Key'] for item in s3_client(s3_server).list_objects_v2(Bucket=bucket).get('Contents', [])]
    dump = [n for n in os.listdir(os.path.join(variables['backup_server_root'], 'database')) if n.endswith('.dump')][0]
    assert any(key.startswith('web1/') and key.endswith(dump) for key in keys), keys
    entry = json.load(open(variables['backup_server_status_file']))['jobs']['offsite']
    assert entry['result'] == 'ok'
    for name in os.listdir(variables['backup_server_log_dir']):
        assert TEST_SECRET not in open(os.path.join(variables['backup_server_log_dir'], name)).read()


def test_backup_and_check_playbooks_run_through_the_modules(prefix):
    root, variables, vars_file = prefix
    code, output = playbook('install.yml', vars_file)
    assert code == 0, output
    code, output = playbook('backup.yml', vars_file, '-e', '{"backup_server_check_min_size": {"config": 1}}')
    assert code == 0, output
    assert re.search(r'database: %s/database/cepcomunicacion_\S+\.dump \(' % re.escape(
        variables['backup_server_root']), output), output
    assert 'media:    %s/media/' % variables['backup_server_root'] in output
    status = json.load(open(variables['backup_server_status_file']))
    assert {status['jobs'][job]['result'] for job in ('database', 'media', 'config')} == {'ok'}
    # every kind fresh but no weekly dump yet: check reports it and the playbook fails on the critical finding
    code, output = playbook('check.yml', vars_file, '-e', '{"backup_server_check_min_size": {"config": 1}}')
    assert code != 0 and 'critical:' in output and 'weekly' in output, output
    assert command(variables, 'database', '--weekly').returncode == 0
    code, output = playbook('check.yml', vars_file, '-e', '{"backup_server_check_min_size": {"config": 1}}')
    assert code == 0, output
    assert 'healthy: True' in output
