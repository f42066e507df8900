# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Attributes shared by every module of the collection
    DOCUMENTATION = r'''
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
'''

    ACTION_WRITES = r'''
attributes:
  check_mode:
    support: full
    details:
      - Reports what would be written and pruned, and writes nothing.
  diff_mode:
    support: none
'''

    RESTORE = r'''
attributes:
  check_mode:
    support: full
    details:
      - Verifies the backup and reports what would be restored, left alone and removed; writes nothing.
  diff_mode:
    support: none
'''

    RESTORE_DIFF = r'''
attributes:
  check_mode:
    support: full
    details:
      - Verifies the backup and reports what would be restored; writes nothing.
  diff_mode:
    support: full
    details:
      - Shows the text differences of changed text files (binary and large files are listed, not diffed).
'''

    INFO_MODULE = r'''
attributes:
  check_mode:
    support: full
    details:
      - This module never changes anything.
  diff_mode:
    support: N/A
    details:
      - This module never changes anything.
'''

    STATUS_FILE = r'''
options:
  status_file:
    description:
      - JSON status file this job records its outcome in (success and failure), read by
        M(cepcomunicacion.backup.backup_check). Written atomically; never holds a secret. Not written in check mode.
    type: path
    default: /var/run/cepcomunicacion-backup-status.json
'''

    BACKUP_ROOT = r'''
options:
  backup_root:
    description:
      - Directory holding C(database/), C(database/weekly/), C(media/) and C(config/).
      - Created with mode C(0700) when missing.
    type: path
    default: /var/backups/cepcomunicacion
'''
