# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # PostgreSQL connection options; mirrors postgres.postgres_argument_spec()
    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host running the PostgreSQL server (TCP).
    type: str
    default: 127.0.0.1
    aliases: [host]
  login_port:
    description:
      - Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - Role to connect as.
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user).
      - Handed to the client programs through a C(0600) passfile in a private temporary directory
        that is removed afterwards; never on a command line, in a log or in the module result.
    type: str
    aliases: [password]
  pg_bin_dir:
    description:
      - Directory holding C(pg_dump), C(pg_restore) and C(psql).
      - When unset, Debian's C(/usr/lib/postgresql/<major>/bin) directories are searched newest first, then E(PATH).
      - A client older than the server's major version is refused.
    type: path
  connect_timeout:
    description:
      - Seconds to wait for a connection before giving up.
    type: int
    default: 10
requirements:
  - psycopg2 (Debian package C(python3-psycopg2)) on the managed host
  - PostgreSQL client programs at least as new as the server (Debian package C(postgresql-client-<major>))
'''
