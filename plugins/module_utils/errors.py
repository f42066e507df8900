# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type the core raises.

Every message is written for the operator who reads it at 3 AM: it names the
thing that is wrong and, where possible, what to do next.  Front ends (the
modules and the scheduled command) catch it once and report it.
"""

from __future__ import annotations


class BackupError(Exception):
    """A failure the operator can act on.

    ``details`` carries structured facts (paths, PIDs, sizes) that front ends
    may return alongside the message.  It must never hold a secret.
    """

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self):
        return self.message
