# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After playbooks/dr/complete_server_failure.yml: a bare server now runs the platform as the lost one had it."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tests'))
import drill_checks  # noqa: E402


def test_database_equals_the_offsite_point(host):
    drill_checks.assert_tables_equal_point(host)


def test_media_equals_the_offsite_point(host):
    drill_checks.assert_media_equal_point(host)


def test_config_files_back(host):
    for path in ('/opt/cepcomunicacion/.env', '/opt/cepcomunicacion/docker-compose.yml',
                 '/opt/cepcomunicacion/app.py', '/etc/systemd/system/cepcomunicacion-app.service'):
        assert host.file(path).exists, path
    assert host.file('/opt/cepcomunicacion/.env').mode == 0o600


def test_services_running_and_enabled(host):
    for name in ('cepcomunicacion-app', 'cron'):
        service = host.service(name)
        assert service.is_running and service.is_enabled, name
    assert host.service('postgresql@15-main').is_running


def test_app_answers(host):
    drill_checks.assert_app_answers(host)


def test_schedule_present(host):
    drill_checks.assert_schedule_present(host)


def test_new_server_backs_up(host):
    result = host.run('env -i PATH=/usr/bin:/bin /usr/local/bin/cepcomunicacion-backup database')
    assert result.rc == 0, result.stderr


def test_report(host):
    report = drill_checks.report(host, 'complete_server_failure')
    assert report['host'] == 'drill-csf-new'
