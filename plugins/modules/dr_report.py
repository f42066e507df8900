#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: dr_report
short_description: Write the drill or incident report of a disaster-recovery playbook
version_added: 0.1.0
description:
  - Builds the report of one recovery from what the playbook collected, and writes it as JSON and Markdown
    (C(dr-<scenario>-<YYYY-MM-DD_HH-MM-SS>.json) and C(.md), named by the start time) into O(report_dir),
    next to the backup logs. Both files are written atomically with mode C(0600).
  - Computes the RTO (from O(started), the start of the playbook, to O(smoke_passed), when the smoke tests
    passed), the age of the recovery point at the start, each phase's duration and, when O(disaster_time) is
    known, the data-loss window between the recovery point and the disaster.
  - Used by the C(cepcomunicacion.backup.recovery) role's C(report.yml); the playbooks under C(playbooks/dr/) call it.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns the report that would be written and its paths; writes nothing.
  diff_mode:
    support: none
options:
  report_dir:
    description:
      - Absolute path of the directory the report files go into; created with mode C(0700) when missing.
    type: path
    required: true
  scenario:
    description:
      - The disaster scenario, for example V(database_corruption).
    type: str
    required: true
  host:
    description:
      - The host that was recovered.
    type: str
  started:
    description:
      - When the playbook started (UTC, ISO 8601). The RTO is measured from here.
    type: str
    required: true
  finished:
    description:
      - When the recovery ended (UTC, ISO 8601). Now when unset.
    type: str
  smoke_passed:
    description:
      - When the smoke tests passed (UTC, ISO 8601); the end of the RTO. Unset when they did not run.
    type: str
  outcome:
    description:
      - V(recovered), V(failed), or V(planned) (a check-mode run).
    type: str
    choices: [recovered, failed, planned]
    default: recovered
  recovery_point:
    description:
      - The recovery point chosen, for example C({requested, kind, path, created, sha256, fallback_from}).
      - Its C(created) (UTC) gives the age of the point and the data-loss window.
    type: dict
    default: {}
  artifacts:
    description:
      - The artifacts used, each a dict such as C({kind, path, sha256, verified}).
    type: list
    elements: dict
    default: []
  phases:
    description:
      - The phases in order, each C({name, start, end}) with UTC ISO 8601 times; a phase without C(end) ends at
        O(finished).
    type: list
    elements: dict
    default: []
  disaster_time:
    description:
      - When the disaster happened (UTC, ISO 8601), when known.
    type: str
  data_lost:
    description:
      - What was lost, versus the recovery point and versus the disaster (rows, files), as the playbook measured it.
    type: dict
    default: {}
  rows_before:
    description:
      - Rows per table in what the recovery replaced (the damaged database), when it could be read. With
        O(rows_after), the report adds C(data_lost.vs_disaster), the rows lost and recovered per table (by row count).
    type: dict
  rows_after:
    description:
      - Rows per table after the recovery (counted by the smoke tests).
    type: dict
  results:
    description:
      - Scenario results, for example rows recovered or files restored.
    type: dict
    default: {}
  skipped:
    description:
      - Steps that were skipped, each C({step, reason}).
    type: list
    elements: dict
    default: []
seealso:
  - module: cepcomunicacion.backup.pg_restore
  - module: cepcomunicacion.backup.media_restore
'''

EXAMPLES = r'''
- name: Write the drill report next to the backup logs
  cepcomunicacion.backup.dr_report:
    report_dir: /var/log/cepcomunicacion
    scenario: database_corruption
    host: "{{ inventory_hostname }}"
    started: "2026-11-29T09:00:00Z"
    smoke_passed: "2026-11-29T09:01:12Z"
    recovery_point:
      requested: latest
      kind: database
      path: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump
      created: "2026-11-29T02:00:00+00:00"
    phases:
      - {name: restore, start: "2026-11-29T09:00:20Z", end: "2026-11-29T09:01:00Z"}
  register: report

- name: Show the RTO
  ansible.builtin.debug:
    msg: "RTO {{ report.report.rto }}; report in {{ report.markdown_path }}"
'''

RETURN = r'''
report:
  description: The report as written to RV(json_path).
  returned: success
  type: dict
  sample: {"scenario": "database_corruption", "host": "db1", "outcome": "recovered", "rto_seconds": 72.0,
           "rto": "1 min 12 s", "recovery_point": {"created": "2026-11-29T02:00:00+00:00", "age_seconds": 25200.0},
           "phases": [{"name": "restore", "duration_seconds": 40.0}], "skipped": []}
rto_seconds:
  description: Seconds from the start of the playbook to the smoke tests passing; null when they did not pass.
  returned: success
  type: float
  sample: 72.0
json_path:
  description: The JSON report (written unless in check mode).
  returned: success
  type: str
  sample: /var/log/cepcomunicacion/dr-database_corruption-2026-11-29_09-00-00.json
markdown_path:
  description: The Markdown report (written unless in check mode).
  returned: success
  type: str
  sample: /var/log/cepcomunicacion/dr-database_corruption-2026-11-29_09-00-00.md
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import dr_report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            report_dir=dict(type='path', required=True),
            scenario=dict(type='str', required=True),
            host=dict(type='str'),
            started=dict(type='str', required=True),
            finished=dict(type='str'),
            smoke_passed=dict(type='str', no_log=False),  # a time, not a password
            outcome=dict(type='str', default='recovered', choices=list(dr_report.OUTCOMES)),
            recovery_point=dict(type='dict', default={}),
            artifacts=dict(type='list', elements='dict', default=[]),
            phases=dict(type='list', elements='dict', default=[]),
            disaster_time=dict(type='str'),
            data_lost=dict(type='dict', default={}),
            results=dict(type='dict', default={}),
            rows_before=dict(type='dict'),
            rows_after=dict(type='dict'),
            skipped=dict(type='list', elements='dict', default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        report = dr_report.build(
            params['scenario'], params['host'], params['started'], finished=params['finished'],
            smoke_passed=params['smoke_passed'], recovery_point=params['recovery_point'],
            artifacts=params['artifacts'], phases=params['phases'], disaster_time=params['disaster_time'],
            data_lost=params['data_lost'], results=params['results'], skipped=params['skipped'],
            outcome=params['outcome'], check_mode=module.check_mode, rows_before=params['rows_before'],
            rows_after=params['rows_after'])
        if module.check_mode:
            json_path, markdown_path = dr_report.report_paths(params['report_dir'], report)
        else:
            json_path, markdown_path = dr_report.write(params['report_dir'], report)
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    module.exit_json(changed=True, report=report, rto_seconds=report['rto_seconds'], json_path=json_path,
                     markdown_path=markdown_path)


if __name__ == '__main__':
    main()
