# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After playbooks/dr/accidental_deletion.yml: exactly the deleted rows are back, later writes are kept."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'tests'))
import drill_checks  # noqa: E402

PSQL = "runuser -u postgres -- psql -X -Atd cepcomunicacion -c "


def sql(host, statement):
    return drill_checks.run(host, PSQL + '"%s"' % statement).strip()


def test_deleted_rows_are_back_exactly(host):
    before = host.file('/var/lib/cepcomunicacion-drill/course7.txt').content_string.strip()
    after = sql(host, "SELECT count(*) || ' ' || md5(coalesce(string_agg(md5(e::text), '' ORDER BY id), '')) "
                      "FROM public.enrollments e WHERE course_id = 7")
    assert int(before.split()[0]) > 0, 'the drill deleted nothing: course 7 had no enrollments'
    assert after == before


def test_writes_after_the_backup_are_kept(host):
    assert sql(host, "SELECT count(*) FROM public.enrollments e JOIN public.students s ON s.id = e.student_id "
                     "WHERE s.email = 'after.backup@example.org' AND e.course_id = 3") == '1'
    assert sql(host, "SELECT count(*) FROM public.audit_log WHERE action = 'written after the deletion'") == '1'


def test_untouched_tables_equal_the_recovery_point(host):
    drill_checks.assert_tables_equal_point(host, except_tables=('public.students', 'public.enrollments',
                                                                'public.audit_log'))


def test_app_answers(host):
    drill_checks.assert_app_answers(host)


def test_schedule_present(host):
    drill_checks.assert_schedule_present(host)


def test_report(host):
    report = drill_checks.report(host, 'accidental_deletion')
    assert report['recovery_point']['path'].startswith('/var/backups/cepcomunicacion/database/')
