# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmark harness shared by bench/run.py and its section modules: paths, timing, the machine.

Not part of the collection. Standard library only, so ``bench/run.py --render`` works without the
benchmark extras; matplotlib is imported only by bench/chart.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform as stdlib_platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, 'docs', 'benchmarks')
REPORT = os.path.join(REPO, 'docs', 'BENCHMARKS.md')
CHART = os.path.join(REPO, 'docs', 'benchmarks', 'benchmarks.png')
PLATFORM_DIR = os.path.join(REPO, 'reference_platform')


def load_platform(name):
    """A module of reference_platform/ (not a package: it would shadow the stdlib ``platform``)."""
    spec = importlib.util.spec_from_file_location('reference_platform_%s' % name,
                                                  os.path.join(PLATFORM_DIR, '%s.py' % name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(message):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), message), file=sys.stderr, flush=True)


def mib(size):
    return '%.1f MiB' % (size / 1048576.0)


def timed(argv, **kwargs):
    started = time.monotonic()
    subprocess.run(argv, check=True, **kwargs)
    return time.monotonic() - started


def machine():
    cpu = ''
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return {'cpu': cpu, 'cores': os.cpu_count(), 'kernel': stdlib_platform.release(),
            'python': stdlib_platform.python_version()}


def load_average():
    """The 1, 5 and 15 minute load averages now (the machine is shared: read timings against it)."""
    return [round(value, 2) for value in os.getloadavg()]


class Collection:
    """Runs a module or playbook of this checkout through Ansible against localhost."""

    # Modules that record their outcome in the status file: without status_file they would write the real
    # server's /var/run/cepcomunicacion-backup-status.json; a benchmark writes its own under the work dir.
    RECORDING = ('pg_backup', 'media_backup', 'config_backup', 'offsite_sync', 'backup_check')

    def __init__(self, workdir):
        self.status_file = os.path.join(workdir, 'status.json')
        self.root = os.path.join(workdir, 'collections')
        link = os.path.join(self.root, 'ansible_collections', 'cepcomunicacion', 'backup')
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(REPO, link)

    def env(self):
        return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=self.root, ANSIBLE_NOCOLOR='1',
                    ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOAD_CALLBACK_PLUGINS='0',
                    ANSIBLE_RETRY_FILES_ENABLED='0')

    def module(self, name, args):
        if name in self.RECORDING and 'status_file' not in args:
            args = dict(args, status_file=self.status_file)
        argv = [os.path.join(os.path.dirname(sys.executable), 'ansible'), 'localhost', '-c', 'local', '-i',
                'localhost,', '-o', '-m', 'cepcomunicacion.backup.%s' % name, '-a', json.dumps(args)]
        started = time.monotonic()
        proc = subprocess.run(argv, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False)
        elapsed = time.monotonic() - started
        if proc.returncode != 0 or '=>' not in proc.stdout:
            raise RuntimeError('%s failed:\n%s' % (name, proc.stdout[-3000:]))
        return json.loads(proc.stdout.split('=>', 1)[1]), elapsed

    def playbook(self, path, vars_file, *extra, timeout=1800):
        """ansible-playbook PATH against localhost; returns (exit code, output, seconds)."""
        argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                os.path.join(REPO, path), '-e', '@' + vars_file] + list(extra)
        started = time.monotonic()
        proc = subprocess.run(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False, timeout=timeout)
        return proc.returncode, proc.stdout, time.monotonic() - started
