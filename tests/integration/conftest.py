# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration suite: the modules run the way a user runs them, against real servers.

Every server is started here on 127.0.0.1 and stopped here.  The collection is
made importable (for Ansible and for direct core calls in assertions) through a
temporary ``ansible_collections`` tree that links to this checkout.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLATFORM_DIR = os.path.join(REPO, 'reference_platform')
COLLECTIONS = tempfile.mkdtemp(prefix='cep-collections-')
os.makedirs(os.path.join(COLLECTIONS, 'ansible_collections', 'cepcomunicacion'))
os.symlink(REPO, os.path.join(COLLECTIONS, 'ansible_collections', 'cepcomunicacion', 'backup'))
atexit.register(shutil.rmtree, COLLECTIONS, True)
sys.path.insert(0, COLLECTIONS)

DATABASE = 'cepcomunicacion'

# Fixtures of the real peers (moto S3, SMTP and webhook receivers), shared by every test module.
pytest_plugins = ['s3_peer', 'alert_peers']


def load_platform(name):
    spec = importlib.util.spec_from_file_location('reference_platform_%s' % name,
                                                  os.path.join(PLATFORM_DIR, '%s.py' % name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pgcluster = load_platform('pgcluster')
checksum = load_platform('checksum')


def tree_state(root):
    """Everything a user cares about per path: type, content hash, mode, owner, mtime (files), link target."""
    state = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            relative = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                state[relative] = ('l', os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                state[relative] = ('d', stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            else:
                with open(path, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                state[relative] = ('f', digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    return state


def table_checksums(cluster, dbname):
    return checksum.database_checksums(cluster.dsn(dbname))


def generate(cluster, dbname, size='tiny', seed=1):
    cluster.createdb(dbname)
    subprocess.run([sys.executable, os.path.join(PLATFORM_DIR, 'generate_data.py'), '--dsn', cluster.dsn(dbname),
                    '--size', size, '--seed', str(seed)], check=True, stdout=subprocess.DEVNULL)


# The collection's default paths on a real server. No test may write there: everything goes under a temp
# prefix. The guard below fails the run when any of them changed while it ran (a module called without
# backup_root or status_file would write exactly there).
HOST_PATHS = ('/var/backups/cepcomunicacion', '/var/run/cepcomunicacion-backup-status.json',
              '/var/run/cepcomunicacion-backup-status.json.lock', '/var/log/cepcomunicacion',
              '/etc/cepcomunicacion', '/etc/cron.d/cepcomunicacion-backup', '/usr/local/bin/cepcomunicacion-backup',
              '/opt/cepcomunicacion-backup', '/var/tmp/cepcomunicacion-backup-status.json')


def prefix_variables(root):
    """The backup_server role's variables that move every path it installs under ``root`` (a pathlib.Path), for
    playbooks/install.yml against localhost (packages are already here); creates the directories the role
    expects to exist. Tests add the database, media, config, offsite and alert settings."""
    for directory in ('bin', 'cron.d', 'logrotate.d', 'run'):
        (root / directory).mkdir(parents=True, exist_ok=True)
    return {
        'target': 'localhost', 'ansible_become': False, 'ansible_python_interpreter': sys.executable,
        'backup_server_manage_packages': False,
        'backup_server_root': str(root / 'backups'),
        'backup_server_install_dir': str(root / 'opt'),
        'backup_server_command_link': str(root / 'bin' / 'cepcomunicacion-backup'),
        'backup_server_config_file': str(root / 'etc' / 'backup.conf'),
        'backup_server_log_dir': str(root / 'log'),
        'backup_server_status_file': str(root / 'run' / 'status.json'),
        'backup_server_cron_file': str(root / 'cron.d' / 'cepcomunicacion-backup'),
        'backup_server_logrotate_file': str(root / 'logrotate.d' / 'cepcomunicacion-backup'),
    }


def host_paths_state():
    """{path: mtime_ns} of every file and directory at or under HOST_PATHS that exists."""
    state = {}
    for top in HOST_PATHS:
        if not os.path.lexists(top):
            continue
        state[top] = os.lstat(top).st_mtime_ns
        for directory, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(directory, name)
                state[path] = os.lstat(path).st_mtime_ns
    return state


@pytest.fixture(scope='session', autouse=True)
def host_paths_untouched():
    """Fail the run if a test wrote to the host's real backup, status, log, config or cron paths."""
    before = host_paths_state()
    yield
    after = host_paths_state()
    changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
    assert not changed, 'tests wrote to the host\'s real paths (use a temp prefix): %s' % ', '.join(changed[:20])


@pytest.fixture(scope='session')
def pg():
    """One throwaway PostgreSQL cluster with the reference platform's data in 'cepcomunicacion'."""
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    try:
        generate(cluster, DATABASE)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope='session')
def bigdb(pg):
    """A database whose uncompressed dump is about 25 MB: larger than the 16 MB tmpfs, slow at gzip -9."""
    pg.createdb('bigdb')
    pg.psql("CREATE TABLE big (id int PRIMARY KEY, body text); "
            "INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 220000) g;", dbname='bigdb')
    return 'bigdb'


class Ansible:
    """Runs one module task through ansible-playbook against localhost and returns its result."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.count = 0
        # backup jobs record their outcome here instead of the real /var/run/cepcomunicacion-backup-status.json
        self.status_file = os.path.join(workdir, 'status.json')

    def status(self):
        with open(self.status_file) as handle:
            return json.load(handle)

    def env(self):
        env = dict(os.environ)
        env.update({
            'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_RETRY_FILES_ENABLED': '0',
            'ANSIBLE_LOCAL_TEMP': os.path.join(self.workdir, 'ansible-local'),
            'ANSIBLE_REMOTE_TEMP': os.path.join(self.workdir, 'ansible-remote'),
            'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
            'ANSIBLE_HOST_KEY_CHECKING': '0',
        })
        return env

    def playbook(self, module, args, check=False):
        self.count += 1
        result_file = os.path.join(self.workdir, 'result-%d.json' % self.count)
        playbook = os.path.join(self.workdir, 'play-%d.yml' % self.count)
        with open(playbook, 'w') as handle:
            handle.write(textwrap.dedent('''\
                - hosts: localhost
                  gather_facts: false
                  module_defaults:
                    cepcomunicacion.backup.pg_backup: {status_file: %(status)s}
                    cepcomunicacion.backup.media_backup: {status_file: %(status)s}
                    cepcomunicacion.backup.config_backup: {status_file: %(status)s}
                  tasks:
                    - name: Module under test
                      cepcomunicacion.backup.%(module)s: %(args)s
                      register: result
                      ignore_errors: true
                      check_mode: %(check)s
                    - name: Save the result
                      ansible.builtin.copy:
                        content: "{{ result | to_json }}"
                        dest: %(result)s
                        mode: "0600"
                      check_mode: false
                ''') % {'module': module, 'args': json.dumps(args), 'check': 'true' if check else 'false',
                        'result': result_file, 'status': self.status_file})
        return playbook, result_file

    def command(self, playbook, verbosity=''):
        argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
                '-c', 'local', playbook]
        if verbosity:
            argv.append(verbosity)
        return argv

    def run(self, module, args, check=False, verbosity=''):
        playbook, result_file = self.playbook(module, args, check)
        proc = subprocess.run(self.command(playbook, verbosity), env=self.env(), cwd=self.workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, check=False)
        output = proc.stdout.decode('utf-8', 'replace')
        assert proc.returncode == 0, output
        with open(result_file) as handle:
            result = json.load(handle)
        result['_output'] = output
        return result

    def start(self, module, args, check=False):
        """Start a run in the background; returns (Popen, result file)."""
        playbook, result_file = self.playbook(module, args, check)
        proc = subprocess.Popen(self.command(playbook), env=self.env(), cwd=self.workdir,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return proc, result_file


@pytest.fixture
def ansible(tmp_path):
    workdir = tmp_path / 'ansible'
    workdir.mkdir()
    return Ansible(str(workdir))


@pytest.fixture
def conn_args(pg):
    return {'login_host': pg.host, 'login_port': pg.port, 'login_user': 'postgres'}
