# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status file: atomic, concurrent-safe, success and failure recorded."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError


def test_success_then_failure_keeps_last_success(tmp_path):
    path = str(tmp_path / 'status.json')
    with job_status.recording(path, 'database') as rec:
        rec.result = {'path': '/b/x.dump', 'size': 10, 'duration': 1.5, 'changed': True}
    with pytest.raises(BackupError):
        with job_status.recording(path, 'database'):
            raise BackupError('cannot connect to PostgreSQL at 127.0.0.1:5432', reason='unreachable')
    entry = job_status.load(path)['jobs']['database']
    assert entry['result'] == 'failed' and entry['exit_code'] == 2 and entry['reason'] == 'unreachable'
    assert entry['artifact'] == '/b/x.dump' and entry['last_success']
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_disabled_when_path_is_none(tmp_path):
    with job_status.recording(None, 'media') as rec:
        rec.result = {}
    assert os.listdir(str(tmp_path)) == []


def test_unwritable_status_file_does_not_hide_the_result(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with job_status.recording(str(blocker / 'status.json'), 'config') as rec:
        rec.result = {'changed': True}
    assert 'cannot update the status file' in rec.status_error


def _writer(path, job):
    for _round in range(20):
        job_status.record_job(path, job, result={'changed': True})


def test_concurrent_jobs_do_not_lose_each_other(tmp_path):
    path = str(tmp_path / 'status.json')
    procs = [multiprocessing.Process(target=_writer, args=(path, job)) for job in ('database', 'media', 'config')]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert sorted(json.load(open(path))['jobs']) == ['config', 'database', 'media']


def test_corrupt_status_file_is_replaced_not_fatal(tmp_path):
    path = tmp_path / 'status.json'
    path.write_text('{half')
    job_status.record_job(str(path), 'database', result={})
    assert job_status.load(str(path))['jobs']['database']['result'] == 'ok'
