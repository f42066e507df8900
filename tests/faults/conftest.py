# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault matrix runs against one installed system per session.

``system``: playbooks/install.yml installs the backup_server role on this machine under a temporary
prefix (as tests/integration/test_server_role.py does), pointed at the session PostgreSQL with the
reference platform's data, offsite copies to moto_server, alerts by email (aiosmtpd with STARTTLS and
AUTH) and to Slack/Discord webhook receivers.  The scheduled jobs then run as cron runs them: the
installed ``cepcomunicacion-backup`` command with cron's environment.

Every server here is started here and stopped here, on 127.0.0.1.  The fixtures of the integration
suite (``pg``, the peer classes) are imported, not copied.

A results collector (the hooks at the end) records each case (outcome, seconds, what was checked) in
tests/output/faults.json and renders docs/RELIABILITY.md from it (tests/faults/report.py).
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(os.path.dirname(HERE), 'integration')
sys.path.insert(0, INTEGRATION)
sys.path.insert(0, HERE)


def _load_integration_conftest():
    """tests/integration/conftest.py under its own name (this file is ``conftest`` too)."""
    name = 'cep_integration_conftest'
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(INTEGRATION, 'conftest.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


integration = _load_integration_conftest()
# the session PostgreSQL with the reference data: the integration suite's fixture
pg = integration.pg
COLLECTIONS, DATABASE, REPO = integration.COLLECTIONS, integration.DATABASE, integration.REPO
pgcluster, table_checksums, tree_state = integration.pgcluster, integration.table_checksums, integration.tree_state

import report  # noqa: E402  (tests/faults/report.py)
from alert_peers import Recorder, SmtpPeer  # noqa: E402
from s3_peer import TEST_KEY, TEST_SECRET, MotoServer, s3_client, unique_bucket  # noqa: E402

# s3_peer's fixtures (s3_auth_server: a moto_server that checks signatures) serve these cases too.
pytest_plugins = ['s3_peer']

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue  # noqa: E402

CRON_ENV = {'PATH': '/usr/bin:/bin'}  # what cron gives a job
HOST = 'localhost'  # the role's host_label: inventory_hostname
SLACK_PATH = '/slack/services/T000/B000/fault-matrix-token'
DISCORD_PATH = '/discord/api/webhooks/1/fault-matrix-token'
OUTPUT_JSON = os.path.join(REPO, 'tests', 'output', 'faults.json')
RELIABILITY_MD = os.path.join(REPO, 'docs', 'RELIABILITY.md')
# Keys the role does not template; set in the installed config so failing channels and locks fail fast here.
TUNING = {'alerts': {'retries': '1', 'retry_delay': '0.2', 'max_retry_delay': '1', 'timeout': '5'},
          'offsite': {'lock_timeout': '2'}, 'check': {'lock_timeout': '2'}}


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def write_media(directory, count=12, size=16 * 1024, seed=0):
    os.makedirs(directory, exist_ok=True)
    for index in range(count):
        sub = os.path.join(directory, 'user%d' % (index % 3))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, 'upload-%02d.bin' % index), 'wb') as handle:
            handle.write(os.urandom(size) if seed is None else bytes([(index + seed) % 256]) * size)


class System:
    """The installed system: its paths, its command, its config file, its peers."""

    def __init__(self, base, variables, pg_cluster, s3_endpoint, bucket, smtp, webhooks):
        self.base = base
        self.variables = variables
        self.pg = pg_cluster
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        self.smtp = smtp
        self.webhooks = webhooks
        self.root = variables['backup_server_root']
        self.config_file = variables['backup_server_config_file']
        self.status_file = variables['backup_server_status_file']
        self.log_dir = variables['backup_server_log_dir']
        self.command_path = variables['backup_server_command_link']
        self.lib = os.path.join(variables['backup_server_install_dir'], 'lib')
        self.media_source = variables['backup_server_media_paths'][0]
        self.config_paths = variables['backup_server_config_paths']
        self.healthy = False

    # -- running the installed command --------------------------------------------------------

    def argv(self, *args):
        return [self.command_path, '--config', self.config_file] + list(args)

    def run(self, *args, timeout=180):
        return subprocess.run(self.argv(*args), env=CRON_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=False, timeout=timeout)

    def start(self, *args):
        """Start a job in a session of its own (so the job and its children can be killed together)."""
        return subprocess.Popen(self.argv(*args), env=CRON_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def ok(self, *args):
        run = self.run(*args)
        assert run.returncode == 0, (args, run.returncode, run.stderr)
        return run

    def log(self, job):
        path = os.path.join(self.log_dir, 'backup-%s.log' % job)
        with open(path) as handle:
            return handle.read()

    def status(self):
        with open(self.status_file) as handle:
            return json.load(handle)

    # -- the config file ------------------------------------------------------------------------

    def read_config(self):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.config_file)
        return parser

    def write_config(self, changes):
        parser = self.read_config()
        for section, values in changes.items():
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in values.items():
                if value is None:
                    parser.remove_option(section, key)
                elif isinstance(value, (list, tuple)):
                    parser.set(section, key, '\n' + '\n'.join(str(item) for item in value))
                else:
                    parser.set(section, key, str(value))
        fd = os.open(self.config_file + '.new', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            parser.write(handle)
        os.replace(self.config_file + '.new', self.config_file)

    @contextlib.contextmanager
    def configured(self, changes):
        """The config file with ``{section: {key: value}}`` changed, put back byte for byte afterwards."""
        with open(self.config_file, 'rb') as handle:
            original = handle.read()
        self.write_config(changes)
        try:
            yield
        finally:
            fd = os.open(self.config_file + '.new', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'wb') as handle:
                handle.write(original)
            os.replace(self.config_file + '.new', self.config_file)

    # -- evidence -------------------------------------------------------------------------------

    def artifacts(self, root=None):
        """{path: sha256 or manifest sha256} of every complete artifact."""
        return dict((item.path, (item.metadata or {}).get('sha256') or (item.metadata or {}).get('manifest_sha256'))
                    for item in catalogue.list_artifacts(root or self.root))

    def verify(self, root=None):
        """backup_info verify=true, through the same core call: (artifacts, failed, incomplete)."""
        found = catalogue.inventory(root or self.root, verify_checksums=True)
        return found['artifacts'], found['failed_verification'], found['incomplete']

    def assert_earlier_backups_verify(self, before, root=None, allow_failed=()):
        """Every artifact in ``before`` still exists with the same checksum and re-hashes clean."""
        artifacts, failed, _incomplete = self.verify(root)
        now = dict((entry['path'], entry['sha256'] or (entry['metadata'] or {}).get('manifest_sha256'))
                   for entry in artifacts)
        missing = sorted(set(before) - set(now))
        assert not missing, 'earlier backups disappeared: %s' % missing
        changed = sorted(path for path in before if before[path] != now[path])
        assert not changed, 'earlier backups changed: %s' % changed
        bad = [entry for entry in failed if entry['path'] not in allow_failed]
        assert not bad, 'earlier backups fail verification: %s' % bad
        return len(before)

    def mark(self):
        return len(self.smtp.messages), len(self.webhooks.requests)

    def alerts_since(self, mark):
        mails = self.smtp.messages[mark[0]:]
        posts = self.webhooks.requests[mark[1]:]
        slack = [p['json']['text'] for p in posts if p['path'] == SLACK_PATH]
        discord = [p['json']['content'] for p in posts if p['path'] == DISCORD_PATH]
        return [m['subject'] + '\n' + m['body'] for m in mails], slack, discord

    def check(self):
        run = self.run('check')
        return run, self.status()['check']

    def assert_reported(self, job, words, mark=None, channels=('email', 'slack', 'discord')):
        """(d): the status file records the failed job, backup_check reports it critical, every channel got it."""
        mark = mark or self.mark()
        entry = self.status()['jobs'][job]
        assert entry['result'] == 'failed', entry
        assert words in (entry.get('error') or ''), (words, entry)
        run, check = self.check()
        assert run.returncode == 2, (run.returncode, run.stderr, check['findings'])
        key = 'job:%s' % job
        finding = [f for f in check['findings'] if f['key'] == key]
        assert finding and finding[0]['severity'] == 'critical' and words in finding[0]['message'], check['findings']
        mails, slack, discord = self.alerts_since(mark)
        got = {'email': mails, 'slack': slack, 'discord': discord}
        for channel in channels:
            hits = [text for text in got[channel] if key in text and words in text]
            assert hits, 'no %s alert naming %s (%r) reached the receiver: %s' % (channel, key, words, got[channel])
        return finding[0]

    def assert_healthy(self):
        """The check is ok again (the fault is gone and the jobs ran)."""
        run, check = self.check()
        bad = [(f['key'], f['severity'], f['message']) for f in check['findings'] if f['severity'] != 'ok']
        assert run.returncode == 0 and not bad, bad
        self.healthy = True
        return check

    def heal(self):
        """After a case that failed half-way: run every job and check."""
        for job in (['database'], ['media'], ['config'], ['offsite']):
            self.run(*job)
        self.assert_healthy()

    def restore_driver(self, *args, timeout=180, new_session=False):
        """tests/faults/restore_driver.py run by the server's python on the installed core."""
        argv = ['/usr/bin/python3', os.path.join(HERE, 'restore_driver.py'), self.lib] + list(args)
        if new_session:
            return subprocess.Popen(argv, env=CRON_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
        proc = subprocess.run(argv, env=CRON_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, check=False)
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])


def playbook(name, vars_file, *extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR='1', ANSIBLE_PIPELINING='1')
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
            os.path.join(REPO, 'playbooks', name), '-e', '@' + vars_file] + list(extra)
    return subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          timeout=600)


@pytest.fixture(scope='session')
def peers(tmp_path_factory):
    """moto_server, an SMTP server and a webhook receiver for the whole matrix."""
    base = tmp_path_factory.mktemp('fault-peers')
    moto = MotoServer()
    smtp = SmtpPeer(str(base))
    smtp.controller.start()
    webhooks = Recorder()
    thread = threading.Thread(target=webhooks.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield moto, smtp, webhooks
    finally:
        webhooks.shutdown()
        webhooks.server_close()
        thread.join(5)
        smtp.controller.stop()
        moto.stop()


@pytest.fixture(scope='session')
def system(pg, peers, tmp_path_factory):
    """The backup_server role installed under a temp prefix, every kind backed up once, healthy."""
    moto, smtp, webhooks = peers
    SETUP_SECONDS['PostgreSQL and peers'] = round(time.monotonic() - _STARTED[0], 1) if _STARTED else None
    base = tmp_path_factory.mktemp('fault-system')
    root = base / 'server'
    write_media(str(root / 'app' / 'uploads'))
    (root / 'app' / 'nginx').mkdir(parents=True)
    (root / 'app' / '.env').write_text('DATABASE_URL=postgres://app@db/cepcomunicacion\n')
    (root / 'app' / 'nginx' / 'site.conf').write_text('server { listen 80; }\n' * 40)
    bucket = unique_bucket('faults')
    s3_client(moto.endpoint).create_bucket(Bucket=bucket)
    variables = dict(integration.prefix_variables(root), **{
        'backup_server_db_port': pg.port,
        'backup_server_db_name': DATABASE,
        'backup_server_lock_timeout': 2,
        'backup_server_media_paths': [str(root / 'app' / 'uploads')],
        'backup_server_config_paths': [str(root / 'app' / '.env'), str(root / 'app' / 'nginx')],
        'backup_server_offsite_enabled': True, 'backup_server_offsite_bucket': bucket,
        'backup_server_offsite_prefix': 'web1', 'backup_server_offsite_endpoint_url': moto.endpoint,
        'backup_server_offsite_region': 'us-east-1', 'backup_server_offsite_access_key': TEST_KEY,
        'backup_server_offsite_secret_key': TEST_SECRET,
        'backup_server_check_min_size': {'database': 1, 'database_weekly': 1, 'config': 1},
        'backup_server_alert_email': smtp.email_options(),
        'backup_server_alert_slack_webhook_url': webhooks.base + SLACK_PATH,
        'backup_server_alert_discord_webhook_url': webhooks.base + DISCORD_PATH,
    })
    vars_file = base / 'vars.json'
    vars_file.write_text(json.dumps(variables))
    started = time.monotonic()
    installed = playbook('install.yml', str(vars_file))
    assert installed.returncode == 0, installed.stdout
    SETUP_SECONDS['install (playbooks/install.yml)'] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    installed_system = System(str(base), variables, pg, moto.endpoint, bucket, smtp, webhooks)
    installed_system.write_config(TUNING)
    for job in (['database'], ['database', '--weekly'], ['media'], ['config'], ['offsite']):
        installed_system.ok(*job)
    installed_system.assert_healthy()
    SETUP_SECONDS['baseline (one backup of each kind, offsite push, check)'] = round(time.monotonic() - started, 1)
    yield installed_system


# --- each case ---------------------------------------------------------------------------------

class Case:
    """What one case checked, in words, for the report."""

    def __init__(self, number, title):
        self.number = number
        self.title = title
        self.checked = []

    def checked_that(self, text):
        self.checked.append(text)


@pytest.fixture
def case(request, system):
    marker = request.node.get_closest_marker('fault')
    assert marker, 'every fault case carries @pytest.mark.fault(number, title)'
    number, title = marker.args
    param = getattr(request.node, 'callspec', None)
    if param is not None:
        title = '%s (%s)' % (title, request.node.callspec.id)
    if not system.healthy:
        system.heal()  # the previous case failed half-way
    system.healthy = False
    current = Case(number, title)
    request.node.stash[CASE_KEY] = current
    return current


CASE_KEY = pytest.StashKey()
RESULTS = []
SETUP_SECONDS = {}
_STARTED = []


def pytest_configure(config):
    config.addinivalue_line('markers', 'fault(number, title): a case of the fault matrix (issue 10)')


def pytest_collection_modifyitems(session, config, items):
    config.stash[TOTAL_KEY] = len(items)


TOTAL_KEY = pytest.StashKey()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    current = item.stash.get(CASE_KEY, None)
    if current is None:
        marker = item.get_closest_marker('fault')
        if marker is None:
            return
        current = Case(*marker.args)
        item.stash[CASE_KEY] = current
    if rep.when == 'setup' and rep.outcome != 'passed' or rep.when == 'call':
        if rep.when == 'call' and hasattr(rep, 'wasxfail'):
            result = 'xfail' if rep.skipped else 'xpass'
        elif rep.when == 'setup':
            result = 'error' if rep.failed else 'skipped'
        else:
            result = rep.outcome
        reason = ''
        if rep.failed:
            reason = str(rep.longrepr.reprcrash.message if hasattr(rep.longrepr, 'reprcrash') else rep.longrepr)
        elif hasattr(rep, 'wasxfail'):
            reason = rep.wasxfail
        RESULTS.append({'case': current.number, 'title': current.title, 'nodeid': item.nodeid, 'outcome': result,
                        'seconds': round(rep.duration, 2), 'checked': list(current.checked),
                        'reason': reason.splitlines()[0][:300] if reason else ''})


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS:
        return
    started = getattr(session.config, '_faults_started', None)
    document = {'generated': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                'wall_seconds': round(time.monotonic() - started, 1) if started else None,
                'selected': session.config.stash.get(TOTAL_KEY, len(RESULTS)),
                'python': sys.version.split()[0], 'load_average_at_start': [round(x, 2) for x in getattr(session.config, '_faults_load', ())],
                'setup_seconds': SETUP_SECONDS, 'cases': RESULTS}
    os.makedirs(os.path.dirname(OUTPUT_JSON), exist_ok=True)
    with open(OUTPUT_JSON, 'w') as handle:
        json.dump(document, handle, indent=2)
    partial = bool(session.config.option.keyword or session.config.option.markexpr or
                   any('::' in arg for arg in session.config.args))
    if partial:
        sys.stderr.write('\nfaults: partial run; %s written, docs/RELIABILITY.md left as it was\n' % OUTPUT_JSON)
        return
    report.write(document, RELIABILITY_MD)


def pytest_sessionstart(session):
    session.config._faults_started = time.monotonic()
    _STARTED.append(session.config._faults_started)
    session.config._faults_load = os.getloadavg()
