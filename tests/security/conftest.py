# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Security tests: secrets, owners and modes, hostile input, against the real parts.

The integration suite's fixtures and helpers are reused, not copied: its conftest is loaded here as the plugin
``integration_conftest`` (it brings the S3 and alert peers with it), and its names are re-exported so that
``tests/integration`` modules imported by these tests (``from conftest import ...``) find them.

``secure_pg`` is a throwaway cluster of this suite whose TCP logins need a password (scram-sha-256): the
database password is then really used by every job, so a leak path cannot hide behind ``trust``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import threading
import time

import pytest

INTEGRATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'integration')
if INTEGRATION not in sys.path:
    sys.path.insert(0, INTEGRATION)

if 'integration_conftest' not in sys.modules:
    _spec = importlib.util.spec_from_file_location('integration_conftest', os.path.join(INTEGRATION, 'conftest.py'))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules['integration_conftest'] = _module
    _spec.loader.exec_module(_module)

from integration_conftest import (  # noqa: E402  pylint: disable=wrong-import-position,unused-import
    COLLECTIONS, DATABASE, PLATFORM_DIR, REPO, Ansible, checksum, generate, load_platform, pgcluster,
    prefix_variables, table_checksums, tree_state)

pytest_plugins = ['integration_conftest']

__all__ = ['COLLECTIONS', 'DATABASE', 'PLATFORM_DIR', 'REPO', 'Ansible', 'checksum', 'generate', 'load_platform',
           'pgcluster', 'table_checksums', 'tree_state', 'marker', 'ProcessSampler']


def marker(kind):
    """A secret no other process on this machine can hold: the kind, then 24 random hex digits."""
    return 'SEC%s%s' % (kind.upper().replace('_', ''), secrets.token_hex(12))


DB_PASSWORD = marker('dbpw')


@pytest.fixture(scope='session')
def secure_pg():
    """A cluster with the reference data in 'cepcomunicacion'; TCP logins as postgres need DB_PASSWORD."""
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    try:
        generate(cluster, DATABASE)
        cluster.set_password('postgres', DB_PASSWORD)
        yield cluster
    finally:
        cluster.destroy()


class ProcessSampler:
    """Reads every process's argv (and environment) from /proc, over and over, while a job runs.

    ``during(label)`` is a context manager; ``samples`` maps (label, 'cmdline'|'environ', text) -> pid.  The
    test's own process is skipped: it holds the secrets it hands to the jobs.
    """

    def __init__(self, interval=0.002):
        self.interval = interval
        self.samples = {}
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = None
        self._label = None
        self._own = os.getpid()

    def _read(self, pid, name):
        try:
            with open('/proc/%s/%s' % (pid, name), 'rb') as handle:
                return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
        except OSError:
            return ''

    def _loop(self, interval):
        seen = set()
        while not self._stop.is_set():
            for pid in os.listdir('/proc'):
                if not pid.isdigit() or int(pid) == self._own:
                    continue
                command = self._read(pid, 'cmdline')
                if not command or (pid, command) in seen:
                    continue
                seen.add((pid, command))  # a new process, or one that exec'd: its environment is new too
                self.samples.setdefault((self._label, 'cmdline', command), int(pid))
                environment = self._read(pid, 'environ')
                if environment:
                    self.samples.setdefault((self._label, 'environ', environment), int(pid))
            self.rounds += 1
            time.sleep(interval)

    def during(self, label, interval=None):
        """Sample while the block runs: every ``interval`` s (default the sampler's; jobs' children live ~0.1 s)."""
        sampler = self

        class _During:
            def __enter__(self):
                sampler._label = label
                sampler._stop.clear()
                sampler._thread = threading.Thread(target=sampler._loop, args=(interval or sampler.interval,),
                                                   daemon=True)
                sampler._thread.start()
                return sampler

            def __exit__(self, *exc):
                sampler._stop.set()
                sampler._thread.join(10)
                return False
        return _During()

    def commands(self, label=None):
        return sorted(text for (lab, name, text) in self.samples if name == 'cmdline' and label in (None, lab))


def run_sampled(sampler, label, argv, interval=None, **kwargs):
    """subprocess.run while the sampler reads the process list."""
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.PIPE)
    kwargs.setdefault('text', True)
    kwargs.setdefault('timeout', 300)
    check = kwargs.pop('check', False)
    with sampler.during(label, interval):
        return subprocess.run(argv, check=check, **kwargs)


def playbook_text(tasks, results_file):
    """One play on localhost: each (module, args) task registered and allowed to fail, then all results saved."""
    lines = ['- hosts: localhost', '  gather_facts: false', '  tasks:']
    for index, (module, args) in enumerate(tasks):
        lines += ['    - name: Case %d %s' % (index, module), '      %s: %s' % (module, json.dumps(args)),
                  '      register: r%d' % index, '      ignore_errors: true']
    lines += ['    - name: Save the results', '      ansible.builtin.copy:',
              '        content: "{{ [%s] | to_json }}"' % ', '.join('r%d' % i for i in range(len(tasks))),
              '        dest: %s' % results_file, '        mode: "0600"']
    return '\n'.join(lines) + '\n'


def run_modules(ansible, name, tasks, verbosity='', sampler=None, interval=None):
    """Run several module tasks in one ansible-playbook (the integration ``Ansible`` runner's environment).

    Returns (results in task order, Ansible output, the play's path).  The play file is 0600: like a vault, its
    text holds whatever secrets the tasks carry.
    """
    play = os.path.join(ansible.workdir, '%s.yml' % name)
    results_file = os.path.join(ansible.workdir, '%s-results.json' % name)
    with open(play, 'w') as handle:
        handle.write(playbook_text(tasks, results_file))
    os.chmod(play, 0o600)
    argv = ansible.command(play, verbosity)
    kwargs = dict(env=ansible.env(), cwd=ansible.workdir, stderr=subprocess.STDOUT)
    if sampler is not None:
        proc = run_sampled(sampler, 'ansible-playbook %s(%s)' % (verbosity + ' ' if verbosity else '', name), argv,
                           interval, **kwargs)
    else:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False, timeout=600, **kwargs)
    assert proc.returncode == 0, proc.stdout[-5000:]
    with open(results_file) as handle:
        return json.load(handle), proc.stdout, play
