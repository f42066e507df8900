# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""No secret leaks, and every file the role and the jobs create has the right owner and mode.

One installed server (playbooks/install.yml on localhost, every path under a temp prefix, as in
tests/integration/test_server_role.py) with a database password, an SMTP password, S3 keys and webhook URLs that
are unique markers.  Every job runs as cron runs it (database, database --weekly, media, config, offsite, check,
check --restore-test), alerts go to the real SMTP and HTTP receivers, offsite copies to moto (signature checked);
then pg_restore, offsite_sync and backup_check run through ansible-playbook -vvv.  While each of these runs, the
process list is read over and over.  Then every file under the prefix, the Ansible output, the alerts and the
sampled argv/environments are searched for every secret.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import threading
import time

import pytest

import alert_peers
from alert_peers import Recorder, SmtpPeer
from conftest import DATABASE, DB_PASSWORD, Ansible, ProcessSampler, marker, prefix_variables, run_modules, run_sampled
from s3_peer import s3_client
from test_server_role import CRON_ENV, playbook, recap

SMTP_PASSWORD = marker('smtppw')
SLACK_TOKEN = marker('slack')
DISCORD_TOKEN = marker('discord')
HC_TOKEN = marker('hc')


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def find_secrets(data, secrets):
    """Kinds of the secrets found in ``data`` (bytes or str)."""
    if isinstance(data, str):
        data = data.encode('utf-8', 'replace')
    return sorted(kind for kind, value in secrets.items() if value.encode('utf-8') in data)


@pytest.fixture(scope='module')
def peers(tmp_path_factory):
    """The SMTP receiver (STARTTLS + AUTH, password SMTP_PASSWORD) and the webhook receiver of alert_peers."""
    directory = tmp_path_factory.mktemp('smtp')
    original = alert_peers.SMTP_PASSWORD
    alert_peers.SMTP_PASSWORD = SMTP_PASSWORD  # the receiver's authenticator reads the module's value
    smtp = SmtpPeer(str(directory))
    smtp.controller.start()
    hooks = Recorder()
    thread = threading.Thread(target=hooks.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield smtp, hooks
    finally:
        hooks.shutdown()
        hooks.server_close()
        thread.join(5)
        smtp.controller.stop()
        alert_peers.SMTP_PASSWORD = original


@pytest.fixture(scope='module')
def server(tmp_path_factory, secure_pg, s3_auth_server, peers):
    """Install, run every job and three modules; return everything the tests scan."""
    smtp, hooks = peers
    endpoint, access_key, secret_key = s3_auth_server
    bucket = 'cep-security'
    s3_client(endpoint, access_key, secret_key).create_bucket(Bucket=bucket)
    secrets = {'database password': DB_PASSWORD, 'SMTP password': SMTP_PASSWORD, 'S3 secret key': secret_key,
               'S3 access key': access_key, 'Slack webhook token': SLACK_TOKEN,
               'Discord webhook token': DISCORD_TOKEN, 'Healthchecks ping token': HC_TOKEN}

    base = tmp_path_factory.mktemp('security')
    root = base / 'server'
    (root / 'app' / 'uploads' / 'user1').mkdir(parents=True)
    (root / 'app' / 'uploads' / 'user1' / 'photo.jpg').write_bytes(os.urandom(4096))
    # the application's own .env holds the database password: config backups carry it by design
    (root / 'app' / '.env').write_text('DATABASE_URL=postgres://postgres:%s@db/cepcomunicacion\n' % DB_PASSWORD)
    os.chmod(root / 'app' / '.env', 0o600)
    for directory in ('bin', 'cron.d', 'logrotate.d', 'run'):
        (root / directory).mkdir()  # before the snapshot of what existed: the role did not create them
    before = set(str(path) for path in root.rglob('*')) | {str(root)}
    variables = dict(prefix_variables(root), **{
        'backup_server_metrics_file': str(root / 'metrics' / 'cepcomunicacion_backup.prom'),
        'backup_server_db_host': secure_pg.host, 'backup_server_db_port': secure_pg.port,
        'backup_server_db_name': DATABASE, 'backup_server_db_user': 'postgres',
        'backup_server_db_password': DB_PASSWORD,
        'backup_server_media_paths': [str(root / 'app' / 'uploads')],
        'backup_server_config_paths': [str(root / 'app' / '.env')],
        'backup_server_offsite_enabled': True, 'backup_server_offsite_bucket': bucket,
        'backup_server_offsite_prefix': 'web1', 'backup_server_offsite_endpoint_url': endpoint,
        'backup_server_offsite_region': 'us-east-1', 'backup_server_offsite_access_key': access_key,
        'backup_server_offsite_secret_key': secret_key,
        'backup_server_alert_email': smtp.email_options(password=SMTP_PASSWORD),
        'backup_server_alert_slack_webhook_url': hooks.base + '/slack/services/T000/B000/' + SLACK_TOKEN,
        'backup_server_alert_discord_webhook_url': hooks.base + '/discord/api/webhooks/42/' + DISCORD_TOKEN,
        'backup_server_alert_healthchecks_url': hooks.base + '/hc/' + HC_TOKEN,
        'backup_server_check_min_size': {'config': 1},
    })
    # the operator's vars file stands in for Ansible Vault: it holds the secrets, 0600, outside the prefix
    vars_file = base / 'vault.json'
    vars_file.write_text(json.dumps(variables))
    os.chmod(vars_file, 0o600)

    sampler = ProcessSampler()
    outputs = {}
    started = time.monotonic()
    with sampler.during('install.yml -vvv', interval=0.02):
        code, outputs['install.yml -vvv'] = playbook('install.yml', str(vars_file), '-vvv')
    assert code == 0, outputs['install.yml -vvv'][-5000:]
    assert recap(outputs['install.yml -vvv'])['failed'] == 0

    print('install.yml -vvv: %.1f s' % (time.monotonic() - started))
    command = [variables['backup_server_command_link'], '--config', variables['backup_server_config_file']]
    runs = {}
    # check runs before the weekly dump exists: a critical finding, so every alert channel is used
    for job in (['database'], ['media'], ['config'], ['offsite'], ['check'], ['database', '--weekly'],
                ['check', '--restore-test']):
        label = 'cepcomunicacion-backup ' + ' '.join(job)
        started = time.monotonic()
        runs[label] = run_sampled(sampler, label, command + job, env=CRON_ENV, stdin=subprocess.DEVNULL)
        print('%s: %.1f s' % (label, time.monotonic() - started))
    assert runs['cepcomunicacion-backup database'].returncode == 0, runs['cepcomunicacion-backup database'].stderr
    for label in ('cepcomunicacion-backup media', 'cepcomunicacion-backup config', 'cepcomunicacion-backup offsite',
                  'cepcomunicacion-backup database --weekly'):
        assert runs[label].returncode == 0, (label, runs[label].stderr)
    assert runs['cepcomunicacion-backup check'].returncode == 2, 'the first check must find the weekly dump missing'

    # three modules carrying secrets, through ansible-playbook -vvv
    ansible = Ansible(str(base / 'ansible'))
    os.makedirs(ansible.workdir)
    login = {'login_host': secure_pg.host, 'login_port': secure_pg.port, 'login_user': 'postgres',
             'login_password': DB_PASSWORD}
    tasks = [
        ('cepcomunicacion.backup.pg_restore', dict(login, backup_root=variables['backup_server_root'],
                                                   database='restored_copy', pre_restore_dump=False)),
        ('cepcomunicacion.backup.offsite_sync', {'mode': 'push', 'backup_root': variables['backup_server_root'],
                                                 'bucket': bucket, 'prefix': 'web1', 'endpoint_url': endpoint,
                                                 'region': 'us-east-1', 'access_key': access_key,
                                                 'secret_key': secret_key, 'status_file': ansible.status_file}),
        ('cepcomunicacion.backup.backup_check', dict(
            login, backup_root=variables['backup_server_root'], status_file=ansible.status_file,
            database=DATABASE, kinds=['database', 'database_weekly', 'media', 'config'], max_age_hours={'media': 0},
            email=smtp.email_options(password=SMTP_PASSWORD),
            slack_webhook_url=variables['backup_server_alert_slack_webhook_url'],
            discord_webhook_url=variables['backup_server_alert_discord_webhook_url'],
            healthchecks_url=variables['backup_server_alert_healthchecks_url'])),
    ]
    started = time.monotonic()
    results, outputs['ansible-playbook -vvv modules'], play = run_modules(
        ansible, 'modules', tasks, '-vvv', sampler=sampler, interval=0.01)
    print('ansible-playbook -vvv modules: %.1f s; %d sampling rounds' % (time.monotonic() - started, sampler.rounds))
    assert not results[0].get('failed'), results[0]
    assert results[0]['changed'] and secure_pg.psql('SELECT count(*) FROM courses', dbname='restored_copy').strip()
    assert not results[1].get('failed'), results[1]
    assert results[2].get('alerts_sent'), results[2]
    return {'root': str(root), 'variables': variables, 'secrets': secrets, 'sampler': sampler, 'outputs': outputs,
            'runs': runs, 'smtp': smtp, 'hooks': hooks, 'before': before, 'vars_file': str(vars_file),
            'ansible_workdir': ansible.workdir, 'play': play}


# Files that hold secrets by design; each is checked for its mode instead.
def expected_holders(server):
    variables = server['variables']
    return {
        variables['backup_server_config_file']: 'the config file the command reads (0600, root)',
        os.path.join(server['root'], 'app', '.env'): "the application's own .env (0600; backed up on purpose)",
    }


def test_the_sampler_sees_a_secret_on_argv_and_in_the_environment():
    """Positive control of the process sampler: a short child with a secret on argv and in its environment."""
    secret = marker('probe')
    sampler = ProcessSampler()
    run_sampled(sampler, 'probe', ['sh', '-c', 'sleep 0.3', secret], env=dict(CRON_ENV, PROBE=secret))
    found = [(name, pid) for (label, name, text), pid in sampler.samples.items() if secret in text]
    assert {name for name, _pid in found} == {'cmdline', 'environ'}, found


def test_the_scan_finds_a_secret_where_one_is(server):
    """Positive control: the scanner sees every secret in the config file, so a leak elsewhere cannot hide."""
    config = open(server['variables']['backup_server_config_file'], 'rb').read()
    assert find_secrets(config, server['secrets']) == sorted(server['secrets'])


def test_no_secret_in_files_output_alerts_or_the_process_list(server):
    secrets = server['secrets']
    holders = expected_holders(server)
    hits = []
    scanned = 0
    for directory, _subdirs, files in os.walk(server['root']):
        for name in files:
            path = os.path.join(directory, name)
            if path in holders or os.path.islink(path):
                continue
            scanned += 1
            with open(path, 'rb') as handle:
                found = find_secrets(handle.read(), secrets)
            hits += ['%s: %s' % (path, kind) for kind in found]
    for path in holders:
        assert mode(path) == 0o600, '%s holds secrets and must be 0600, is %o' % (path, mode(path))
    # Ansible's own work directory: results, retry files, leftovers of module runs (the play text is the vault)
    for directory, _subdirs, files in os.walk(server['ansible_workdir']):
        for name in files:
            path = os.path.join(directory, name)
            if path == server['play']:
                continue
            scanned += 1
            hits += ['%s: %s' % (path, kind) for kind in find_secrets(open(path, 'rb').read(), secrets)]
    for label, text in server['outputs'].items():
        hits += ['Ansible output of %s: %s' % (label, kind) for kind in find_secrets(text, secrets)]
    for label, run in server['runs'].items():
        hits += ['stdout/stderr of %s: %s' % (label, kind) for kind in find_secrets(run.stdout + run.stderr, secrets)]
    for message in server['smtp'].messages:
        hits += ['alert e-mail %r: %s' % (message['subject'], kind)
                 for kind in find_secrets(message['message'].as_bytes(), secrets)]
    for request in server['hooks'].requests:
        hits += ['webhook body to %s: %s' % (request['path'].split('/')[1], kind)
                 for kind in find_secrets(request['body'], secrets)]
    sampler = server['sampler']
    for (label, kind_of_text, text), pid in sampler.samples.items():
        hits += ['/proc/%d/%s during %s: %s' % (pid, kind_of_text, label, kind) for kind in find_secrets(text, secrets)]
    assert not hits, 'secrets leaked:\n' + '\n'.join(sorted(set(hits)))

    # the scan saw real work: files, alerts on every channel, and the job's child programs on the process list
    assert scanned > 20, scanned
    assert server['smtp'].messages and all(m['authenticated'] for m in server['smtp'].messages)
    for prefix in ('/slack/', '/discord/', '/hc/'):
        assert server['hooks'].to(prefix), 'no request reached %s' % prefix
    seen = ' '.join(sampler.commands())
    for program in ('pg_dump', 'pg_restore', 'rsync'):
        assert program in seen, '%s never showed on the process list (%d sampling rounds)' % (program, sampler.rounds)


def test_cron_file_and_status_name_no_secret_and_keep_private_state_private(server):
    variables = server['variables']
    cron = open(variables['backup_server_cron_file']).read()
    assert '--config %s' % variables['backup_server_config_file'] in cron
    status = json.load(open(variables['backup_server_status_file']))
    assert {status['jobs'][job]['result'] for job in ('database', 'database_weekly', 'media', 'config', 'offsite')} \
        == {'ok'}


# --- owners and modes --------------------------------------------------------------------------------------------

def exception_for(server, path, st):
    """The documented exception that applies to ``path`` (a reason), or None: then 0600/0700 and the owner apply."""
    variables = server['variables']
    install = variables['backup_server_install_dir']
    snapshots = os.path.join(variables['backup_server_root'], 'media')
    if path == install or path.startswith(install + os.sep):
        return 'the installed command and core: root-owned, 0755 dirs / 0755 command / 0644 modules, never writable ' \
               'by group or others'
    if path in (os.path.dirname(variables['backup_server_config_file']), variables['backup_server_log_dir']):
        return 'config and log directories: 0750 root:<backup group> (the files inside are 0600)'
    if path in (variables['backup_server_cron_file'], variables['backup_server_logrotate_file']):
        return 'cron and logrotate read these: 0644 root, no secrets'
    if path in (variables['backup_server_metrics_file'], os.path.dirname(variables['backup_server_metrics_file'])):
        return 'node_exporter textfile: 0644 file / 0755 directory, counts and ages only'
    if path == variables['backup_server_command_link']:
        return 'the symlink on PATH (its target is checked)'
    parts = os.path.relpath(path, snapshots).split(os.sep)
    if not path.startswith(snapshots + os.sep) or len(parts) < 2 or parts[0] in ('pre-restore', 'latest'):
        return None
    if parts[1] in ('', '.manifest.json') or len(parts) == 2 and not stat.S_ISDIR(st.st_mode):
        return None
    return 'media snapshot contents keep the source files\' modes and owners (a restore must give them back); ' \
           'the snapshot directory itself is 0700'


def test_every_created_path_has_its_owner_and_mode(server):
    backup_uid = pwd.getpwnam('root').pw_uid  # backup_server_user defaults to root
    wrong = []
    exceptions = {}
    for directory, subdirs, files in os.walk(server['root']):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            if path in server['before'] or path.startswith(os.path.join(server['root'], 'app') + os.sep):
                continue  # made by the test (the application and the system directories)
            st = os.lstat(path)
            reason = exception_for(server, path, st)
            if stat.S_ISLNK(st.st_mode):
                continue  # media/latest and the command link: their targets are checked
            if reason:
                exceptions.setdefault(reason, []).append('%o %s' % (mode(path), os.path.relpath(path, server['root'])))
                if st.st_mode & 0o022 and not reason.startswith('media snapshot'):
                    wrong.append('%s is writable by group or others (%o)' % (path, mode(path)))
                continue
            expected = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if mode(path) != expected or st.st_uid != backup_uid:
                wrong.append('%s: mode %o uid %d, expected %o uid %d' % (
                    path, mode(path), st.st_uid, expected, backup_uid))
    assert not wrong, 'wrong owner or mode:\n' + '\n'.join(wrong)
    variables = server['variables']
    command = os.path.realpath(variables['backup_server_command_link'])
    st = os.stat(command)
    assert (mode(command), st.st_uid) == (0o755, 0), 'the command must be 0755 and owned by root'
    assert mode(variables['backup_server_config_file']) == 0o600
    assert mode(variables['backup_server_metrics_file']) == 0o644
    # the checks above ran over real output: dumps, sidecars, logs, status, locks
    names = [name for _d, _s, files in os.walk(server['root']) for name in files]
    for suffix in ('.dump', '.dump.sha256', '.tar.gz', 'backup-database.log', 'status.json'):
        assert any(name.endswith(suffix) for name in names), suffix
    print('documented exceptions: %s' % json.dumps(exceptions, indent=1))
