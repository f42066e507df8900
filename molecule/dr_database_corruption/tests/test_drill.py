# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After playbooks/dr/database_corruption.yml: the database equals the recovery point again."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tests'))
import drill_checks  # noqa: E402


def test_database_equals_the_recovery_point(host):
    drill_checks.assert_tables_equal_point(host)


def test_write_after_the_backup_is_gone_as_the_plan_said(host):
    out = drill_checks.run(host, "runuser -u postgres -- psql -X -Atd cepcomunicacion -c "
                                 "\"SELECT count(*) FROM public.audit_log WHERE action = 'written after the backup'\"")
    assert out.strip() == '0'


def test_damaged_database_is_kept_for_rollback(host):
    out = drill_checks.run(host, "runuser -u postgres -- psql -X -Atd postgres -c "
                                 "\"SELECT datname FROM pg_database WHERE datname LIKE 'cepcomunicacion__pre_restore_%'\"")
    assert out.strip(), 'the replaced database was not kept'


def test_media_untouched(host):
    drill_checks.assert_media_equal_point(host)


def test_app_answers(host):
    drill_checks.assert_app_answers(host)


def test_schedule_back(host):
    drill_checks.assert_schedule_present(host)


def test_report(host):
    report = drill_checks.report(host, 'database_corruption')
    assert report['recovery_point']['path'].startswith('/var/backups/cepcomunicacion/database/')
    assert report['disaster_time']
