#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: backup_check
short_description: Check that the backups are fresh, whole, restorable and have room; alert and record status
version_added: 0.1.0
description:
  - Runs the health checks over O(backup_root) and the status file, and returns every finding with a severity
    (V(ok), V(warning) or V(critical)) and a message naming the evidence and the next step.
  - "Checks: freshness of the newest backup of each kind (O(max_age_hours)); the offsite copy's age from the status
    file's C(offsite) job when O(offsite=true); minimum size (O(min_size)) and a sudden shrink
    (O(shrink_ratio) of the median of the previous O(shrink_window)); checksums of the newest backup of each kind
    (every backup with O(deep=true)); disk usage of the backup filesystem and whether the next backups would fit;
    the last exit status of each job in the status file (a job recorded as running whose process is gone was killed:
    critical); a job lock held far longer than usual; backups dated in the future (a warning; they never count as the
    newest)."
  - With O(restore_test=true), restores the newest database dump into a scratch database (under the database job
    lock), reads every table, runs O(restore_sanity_sql) and O(restore_min_rows), then drops it. A dump that does not
    restore is critical whatever its checksum says.
  - Writes the outcome into the C(check) section of O(status_file) (atomically) and, when O(metrics_file) is set, a
    Prometheus textfile for node_exporter's textfile collector.
  - Alerts by email, Slack, Discord and Healthchecks.io. A problem alerts once per channel, again after
    O(renotify_hours), and a "resolved" message follows when it clears; the state is kept in the status file.
    Deliveries are retried with backoff (honouring C(Retry-After) on HTTP 429); one channel failing does not stop the
    others, and failures are logged and recorded in the status file.
  - An unhealthy result is not a task failure; use RV(healthy) or RV(exit_code) in the playbook. The module fails only
    when it cannot check (a missing backup root, bad options).
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.postgres
  - cepcomunicacion.backup.attributes
attributes:
  check_mode:
    support: full
    details:
      - Runs every check except the restore test, reports the alerts that are due in RV(alerts_due), and sends nothing,
        writes nothing.
  diff_mode:
    support: none
options:
  backup_root:
    description:
      - Directory holding C(database/), C(database/weekly/), C(media/) and C(config/). It must exist.
    type: path
    default: /var/backups/cepcomunicacion
  status_file:
    description:
      - JSON status file the backup jobs record their outcome in; its C(check) section is written by this module
        (atomically). Never holds a secret. Not written in check mode.
    type: path
    default: /var/run/cepcomunicacion-backup-status.json
  kinds:
    description:
      - Kinds of backup that must exist and be fresh.
    type: list
    elements: str
    choices: [database, database_weekly, media, config]
    default: [database, database_weekly, media, config]
  prefix:
    description:
      - First part of the database dumps' file names.
    type: str
    default: cepcomunicacion
  max_age_hours:
    description:
      - Freshness limit per kind, in hours; older is critical.
    type: dict
    suboptions:
      database:
        description: Daily database dumps.
        type: float
        default: 24
      database_weekly:
        description: Weekly database dumps.
        type: float
        default: 192
      media:
        description: Media snapshots.
        type: float
        default: 24
      config:
        description: Configuration archives.
        type: float
        default: 24
      offsite:
        description: The last successful offsite copy (the status file's C(offsite) job), when O(offsite=true).
        type: float
        default: 26
  min_size:
    description:
      - Minimum size in bytes of the newest backup of each kind; smaller is critical (an empty or cut-short backup).
    type: dict
    suboptions:
      database:
        description: Daily database dumps.
        type: int
        default: 65536
      database_weekly:
        description: Weekly database dumps.
        type: int
        default: 65536
      media:
        description: Media snapshots (the bytes of the files they hold).
        type: int
        default: 1
      config:
        description: Configuration archives.
        type: int
        default: 512
  shrink_ratio:
    description:
      - The newest backup of a kind smaller than this fraction of the median of the previous O(shrink_window) is a
        warning (data may have been deleted at the source). V(0) turns the rule off. Needs three previous backups.
    type: float
    default: 0.5
  shrink_window:
    description:
      - How many previous backups the sudden-shrink median is taken over.
    type: int
    default: 7
  deep:
    description:
      - Verify every backup against its checksum sidecar or manifest, not only the newest of each kind.
    type: bool
    default: false
  disk_warning_percent:
    description:
      - Usage of the backup filesystem at which a warning is raised.
    type: int
    default: 80
  disk_critical_percent:
    description:
      - Usage of the backup filesystem at which the finding is critical.
    type: int
    default: 90
  free_space_margin:
    description:
      - The next backups are estimated as the newest database dump, configuration archive and media snapshot's new
        space, times this margin; less free space than that is critical.
    type: float
    default: 1.2
  stuck_lock_hours:
    description:
      - A job lock held by a live process for longer than this many hours, or O(stuck_lock_factor) times the job's
        last recorded duration if that is longer, is a warning (a stuck job).
    type: float
    default: 6
  stuck_lock_factor:
    description:
      - See O(stuck_lock_hours).
    type: float
    default: 4
  offsite:
    description:
      - Offsite copies are configured; check the age of the last successful one.
    type: bool
    default: false
  restore_test:
    description:
      - Restore the newest database dump into a scratch database, check it, and drop it.
      - Needs the connection options; the scratch database is named C(<database>__restore_<time>).
    type: bool
    default: false
  database:
    description:
      - The production database the dumps are of; the restore test's scratch database is named after it and
        created with its encoding and collation. It is never modified.
    type: str
    default: cepcomunicacion
    aliases: [db]
  restore_sanity_sql:
    description:
      - Statements run on the restored copy, each of which must return V(true) in its first column.
    type: list
    elements: str
    default: []
  restore_min_rows:
    description:
      - Minimum row counts of named tables (C(schema.table) or C(table) in C(public)) in the restored copy.
    type: dict
    default: {}
  lock_timeout:
    description:
      - Seconds the restore test waits for a running database job, and a check waits for another check.
    type: int
    default: 60
  host_label:
    description:
      - How alerts name this server. Defaults to its fully qualified name.
    type: str
  alert_severity:
    description:
      - The lowest severity that alerts.
    type: str
    choices: [warning, critical]
    default: warning
  renotify_hours:
    description:
      - Alert again about a problem that is still there after this many hours. V(0) never repeats.
    type: float
    default: 24
  email:
    description:
      - Send alerts by email.
    type: dict
    suboptions:
      smtp_host:
        description: SMTP server.
        type: str
        required: true
      smtp_port:
        description: SMTP port; defaults to 587 for V(starttls), 465 for V(tls) and 25 for V(none).
        type: int
      security:
        description:
          - V(starttls) upgrades a plain connection; V(tls) connects with TLS (SMTPS); V(none) is for a local relay
            and refuses to send a password.
        type: str
        choices: [starttls, tls, none]
        default: starttls
      username:
        description: User to log in as; no login when unset.
        type: str
      password:
        description: Password of O(email.username). Never logged or returned.
        type: str
      sender:
        description: From address.
        type: str
        required: true
      recipients:
        description: To addresses.
        type: list
        elements: str
        required: true
      ca_file:
        description: CA certificate(s) that sign the server's certificate, when not the system's.
        type: path
      validate_certs:
        description: Verify the server's certificate and name.
        type: bool
        default: true
  slack_webhook_url:
    description:
      - Slack incoming webhook URL. Treated as a secret.
    type: str
  discord_webhook_url:
    description:
      - Discord webhook URL. Treated as a secret.
    type: str
  healthchecks_url:
    description:
      - Healthchecks.io ping URL (C(https://hc-ping.com/<uuid>)). Each run pings C(/start), then the URL itself when
        healthy or C(/<exit code>) (a failure to Healthchecks) when not. Treated as a secret.
    type: str
  alert_retries:
    description:
      - Retries of a failed delivery.
    type: int
    default: 3
  alert_retry_delay:
    description:
      - Seconds before the first retry; doubled each time.
    type: float
    default: 2
  alert_max_retry_delay:
    description:
      - Longest wait between retries, including a C(Retry-After) asked for by a rate limit; a longer C(Retry-After)
        gives up.
    type: float
    default: 60
  alert_timeout:
    description:
      - Seconds each connection to an alert service may take.
    type: float
    default: 10
  metrics_file:
    description:
      - Write a Prometheus textfile here (for example C(/var/lib/prometheus/node-exporter/cepcomunicacion_backup.prom)),
        atomically, mode C(0644).
    type: path
  verify_workers:
    description:
      - Threads that verify checksums in parallel. Defaults to the number of CPUs, at most 4.
    type: int
notes:
  - The scheduled command C(cepcomunicacion-backup check) runs the same checks and exits 0 when healthy, 1 on a
    warning and 2 on a critical finding, so cron mail and Healthchecks see it.
seealso:
  - module: cepcomunicacion.backup.backup_info
  - module: cepcomunicacion.backup.pg_backup
'''

EXAMPLES = r'''
- name: Check the backups and alert the on-call address
  cepcomunicacion.backup.backup_check:
    offsite: true
    email:
      smtp_host: smtp.example.org
      username: alerts@example.org
      password: "{{ vault_smtp_password }}"
      sender: alerts@example.org
      recipients: [ops@example.org]
    slack_webhook_url: "{{ vault_slack_webhook }}"
    healthchecks_url: "{{ vault_healthchecks_url }}"
    metrics_file: /var/lib/prometheus/node-exporter/cepcomunicacion_backup.prom
  register: health

- name: Fail the play when a check is critical
  ansible.builtin.assert:
    that: health.exit_code < 2
    fail_msg: "{{ health.findings | selectattr('severity', 'equalto', 'critical') | map(attribute='message') | list }}"

- name: Weekly restore test of the newest dump, verifying every backup
  cepcomunicacion.backup.backup_check:
    deep: true
    restore_test: true
    login_user: postgres
    restore_min_rows:
      public.courses: 10
      public.enrollments: 100
    restore_sanity_sql:
      - SELECT count(*) > 0 FROM users
'''

RETURN = r'''
healthy:
  description: True when every finding is V(ok).
  returned: always
  type: bool
  sample: false
health:
  description: The worst severity found.
  returned: always
  type: str
  sample: critical
exit_code:
  description: What the scheduled command exits with; 0 healthy, 1 warning, 2 critical.
  returned: always
  type: int
  sample: 2
findings:
  description: Every check's verdict, including those that passed.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: C(<check>:<subject>); alerts are de-duplicated by it.
      type: str
      sample: freshness:database
    check:
      description: freshness, clock, size, shrink, checksum, disk, job, lock or restore_test.
      type: str
      sample: freshness
    subject:
      description: The kind, job, or disk aspect checked.
      type: str
      sample: database
    severity:
      description: ok, warning or critical.
      type: str
      sample: critical
    title:
      description: A short name of the problem, used in alert subjects.
      type: str
      sample: stale daily database dump
    message:
      description: What was found, the evidence, and the next step.
      type: str
      sample: "the newest daily database dump, cepcomunicacion_2026-11-27_02-00-00.dump, was made 50.0 h ago
        (2026-11-27T02:00:00+00:00); the limit is 24.0 h. Next step: check that the scheduled pg_backup (kind: daily)
        job runs (cron, the status file, its log) and run it by hand."
    next_step:
      description: The next step alone.
      type: str
      sample: run pg_backup by hand and read its log.
    evidence:
      description: The facts behind the verdict (paths, ages, sizes).
      type: dict
      sample: {path: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-27_02-00-00.dump, age_hours: 50.0}
alerts_sent:
  description: Alert messages delivered by this run (Healthchecks pings are not listed here).
  returned: always
  type: list
  elements: dict
  sample: [{channel: email, event: problem, findings: ["freshness:database"], resolved: [], delivered: true,
            attempts: 1, subject: "[cepcomunicacion-backup] CRITICAL on web1: stale daily database dump"}]
alert_failures:
  description: Deliveries (alerts and Healthchecks pings) that failed after their retries; also in the status file.
  returned: always
  type: list
  elements: dict
  sample: [{channel: slack, event: problem, delivered: false, attempts: 4, error: the Slack webhook answered HTTP 500}]
alerts_due:
  description: Per channel, the finding keys that were due to alert, remind or resolve (in check mode, not sent).
  returned: always
  type: list
  elements: dict
  sample: [{channel: email, problems: ["freshness:database"], reminders: [], resolved: []}]
kinds:
  description: Per kind, the newest backup, its age, size and duration, and how many exist.
  returned: always
  type: dict
  sample: {database: {newest: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump,
                      age_seconds: 3600.0, size: 2191795, count: 30, verified: 1}}
disk:
  description: Usage of the backup filesystem and the estimated size of the next backups.
  returned: always
  type: dict
  sample: {path: /var/backups/cepcomunicacion, used_percent: 42.0, available_bytes: 53687091200,
           next_backup_bytes: 2630154}
restore_test:
  description: The last restore test (this run's, or the previous one recorded in the status file), or null.
  returned: always
  type: dict
  sample: {result: ok, backup: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump,
           tables: 8, duration: 4.2, row_counts: {public.courses: 120}}
status_file:
  description: The status file written.
  returned: always
  type: str
  sample: /var/run/cepcomunicacion-backup-status.json
duration:
  description: Seconds the check took.
  returned: always
  type: float
  sample: 1.3
metrics_file:
  description: The Prometheus textfile written, or null.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/cepcomunicacion_backup.prom
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import health
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres


def argument_spec():
    spec = postgres.postgres_argument_spec()
    ages = health.DEFAULT_MAX_AGE_HOURS
    sizes = health.DEFAULT_MIN_SIZE
    spec.update(
        backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
        status_file=dict(type='path', default=job_status.DEFAULT_STATUS_FILE),
        kinds=dict(type='list', elements='str', choices=list(health.BACKUP_KINDS), default=list(health.BACKUP_KINDS)),
        prefix=dict(type='str', default=layout.DEFAULT_PREFIX),
        max_age_hours=dict(type='dict', apply_defaults=True, options=dict(
            (kind, dict(type='float', default=ages[kind])) for kind in ages)),
        min_size=dict(type='dict', apply_defaults=True, options=dict(
            (kind, dict(type='int', default=sizes[kind])) for kind in sizes)),
        shrink_ratio=dict(type='float', default=0.5),
        shrink_window=dict(type='int', default=7),
        deep=dict(type='bool', default=False),
        disk_warning_percent=dict(type='int', default=80),
        disk_critical_percent=dict(type='int', default=90),
        free_space_margin=dict(type='float', default=1.2),
        stuck_lock_hours=dict(type='float', default=6),
        stuck_lock_factor=dict(type='float', default=4),
        offsite=dict(type='bool', default=False),
        restore_test=dict(type='bool', default=False),
        database=dict(type='str', default='cepcomunicacion', aliases=['db']),
        restore_sanity_sql=dict(type='list', elements='str', default=[]),
        restore_min_rows=dict(type='dict', default={}),
        lock_timeout=dict(type='int', default=60),
        host_label=dict(type='str'),
        alert_severity=dict(type='str', default='warning', choices=['warning', 'critical']),
        renotify_hours=dict(type='float', default=24),
        email=dict(type='dict', options=dict(
            smtp_host=dict(type='str', required=True),
            smtp_port=dict(type='int'),
            security=dict(type='str', default='starttls', choices=['starttls', 'tls', 'none']),
            username=dict(type='str'),
            password=dict(type='str', no_log=True),
            sender=dict(type='str', required=True),
            recipients=dict(type='list', elements='str', required=True),
            ca_file=dict(type='path'),
            validate_certs=dict(type='bool', default=True),
        )),
        slack_webhook_url=dict(type='str', no_log=True),
        discord_webhook_url=dict(type='str', no_log=True),
        healthchecks_url=dict(type='str', no_log=True),
        alert_retries=dict(type='int', default=3),
        alert_retry_delay=dict(type='float', default=2),
        alert_max_retry_delay=dict(type='float', default=60),
        alert_timeout=dict(type='float', default=10),
        metrics_file=dict(type='path'),
        verify_workers=dict(type='int'),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        settings = health.Settings(module.params)
        result = health.run_check(settings, check_mode=module.check_mode, log=module.log)
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    status_error = result.pop('status_error', None)
    if status_error:
        module.warn(status_error)
    for failure in result['alert_failures']:
        module.warn('alert via %s failed: %s' % (failure['channel'], failure['error']))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
