# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-kind lock, with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

HOLDER = r'''
import fcntl, os, sys, time, json
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "started": "then"}).encode())
print("held", flush=True)
time.sleep(float(sys.argv[2]))
'''


def hold(path, seconds):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, path, str(seconds)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b'held'
    return proc


def test_timeout_names_the_holder(tmp_path):
    path = job_lock.lock_path(str(tmp_path), 'database')
    holder = hold(path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(BackupError) as caught:
            with job_lock.JobLock(str(tmp_path), 'database', timeout=0.5):
                pass
        assert time.monotonic() - started < 5
        assert 'PID %d' % holder.pid in str(caught.value)
        assert caught.value.details['holder_pid'] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_waits_then_acquires(tmp_path):
    path = job_lock.lock_path(str(tmp_path), 'media')
    holder = hold(path, 0.5)
    try:
        with job_lock.JobLock(str(tmp_path), 'media', timeout=10) as lock:
            assert lock.waited > 0.2
            assert json.load(open(path))['pid'] == os.getpid()
    finally:
        holder.wait()


def test_stale_lock_from_dead_process_does_not_block(tmp_path):
    path = job_lock.lock_path(str(tmp_path), 'config')
    holder = hold(path, 30)
    holder.kill()
    holder.wait()
    with job_lock.JobLock(str(tmp_path), 'config', timeout=0) as lock:
        assert lock.stale['pid'] == holder.pid


def test_kinds_are_independent(tmp_path):
    with job_lock.JobLock(str(tmp_path), 'database', timeout=0):
        with job_lock.JobLock(str(tmp_path), 'media', timeout=0):
            pass


def test_lock_file_mode(tmp_path):
    with job_lock.JobLock(str(tmp_path), 'database', timeout=0) as lock:
        assert os.stat(lock.path).st_mode & 0o777 == 0o600
        assert os.stat(os.path.dirname(lock.path)).st_mode & 0o777 == 0o700
