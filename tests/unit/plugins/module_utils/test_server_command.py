# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled command's own parts: config parsing, help, exit codes, logging."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import server_command
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

CONFIG = '''
[paths]
backup_root = {root}/backups
status_file = {root}/status.json
log_dir = {root}/log

[database]
name = cepcomunicacion
port = 6543
password = p%ss;word # not a comment

[media]
paths =
    /srv/uploads
    /var/lib/docker/volumes/media/_data
retention_days = 7
'''


def write(tmp_path, text):
    path = tmp_path / 'backup.conf'
    path.write_text(text.format(root=tmp_path))
    return str(path)


def test_config_types_defaults_and_lists(tmp_path):
    config = server_command.Config(write(tmp_path, CONFIG))
    assert config['database']['port'] == 6543 and config['database']['host'] == '127.0.0.1'
    assert config['database']['password'] == 'p%ss;word # not a comment'
    assert config['media']['paths'] == ['/srv/uploads', '/var/lib/docker/volumes/media/_data']
    assert config['media']['retention_days'] == 7 and config['config']['paths'] == []
    assert config['offsite']['enabled'] is False


@pytest.mark.parametrize('text,expected', [
    ('[database]\nport = five\n', "[database] port = 'five' is not a valid int"),
    ('[offsite]\nenabled = perhaps\n', "[offsite] enabled = 'perhaps' is not a valid bool"),
    ('not an ini file', 'is not valid'),
])
def test_bad_config_names_the_key(tmp_path, text, expected):
    with pytest.raises(BackupError, match=expected.replace('[', r'\[').replace(']', r'\]')):
        server_command.Config(write(tmp_path, text))


def test_validate_config_and_status_exit_zero(tmp_path, capsys):
    path = write(tmp_path, CONFIG)
    assert server_command.main(['--config', path, 'validate-config']) == 0
    assert server_command.main(['--config', path, 'status']) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index('{'):])['jobs'] == {}


def test_missing_config_exits_2(tmp_path, capsys):
    assert server_command.main(['--config', str(tmp_path / 'absent.conf'), 'database']) == 2
    assert 'cannot read the config file' in capsys.readouterr().err


def test_empty_media_paths_fails_clearly_and_is_logged(tmp_path, capsys):
    path = write(tmp_path, '[paths]\nbackup_root = {root}/b\nstatus_file = {root}/s.json\nlog_dir = {root}/log\n')
    assert server_command.main(['--config', path, '--quiet', 'media']) == 2
    assert '[media] paths is empty' in capsys.readouterr().err
    log = open(os.path.join(str(tmp_path), 'log', 'backup-media.log')).read()
    assert 'FAILED media' in log
    status = json.load(open(os.path.join(str(tmp_path), 's.json')))
    assert status['jobs']['media']['exit_code'] == 2


def test_offsite_disabled_is_a_quiet_success(tmp_path):
    path = write(tmp_path, CONFIG)
    assert server_command.main(['--config', path, '--quiet', 'offsite']) == 0


def test_help_lists_jobs_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        server_command.main(['--help'])
    out = capsys.readouterr().out
    for word in ('database [--weekly]', 'check [--restore-test]', 'exit codes', '1  warning', '2  failure'):
        assert word in out
