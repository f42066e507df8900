# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throwaway PostgreSQL clusters for tests, the demo and disaster drills.

Part of the reference platform (``reference_platform/``), not of the collection. Standard
library only. Works when the caller is root (the server runs as ``postgres``
through ``runuser``) or an ordinary user (the server runs as that user).

    import sys; sys.path.insert(0, "platform")   # never make reference_platform/ a package:
    from pgcluster import ThrowawayCluster         # it would shadow the stdlib module

    with ThrowawayCluster() as pg:                 # initdb + start; destroyed on exit
        pg.createdb("cepcomunicacion")
        print(pg.psql("SELECT version()"))
        pg.set_password("postgres", "s3cret")      # TCP now needs scram-sha-256

CLI (leaves the server running until ``stop``)::

    python3 reference_platform/pgcluster.py start --dir /tmp/demo-pg   # prints {"host", "port", "dir", ...}
    python3 reference_platform/pgcluster.py stop --dir /tmp/demo-pg [--destroy]
"""

from __future__ import annotations

import argparse
import atexit
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

__all__ = ["ClusterError", "ThrowawayCluster", "find_bin_dir"]

DEFAULT_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)
STATE_FILE = "cluster.json"
LOG_FILE = "postgres.log"

# Settings appended to postgresql.conf. Durability is off on purpose: these
# clusters hold nothing worth keeping and must be fast.
DEFAULT_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "30min",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "timezone": "UTC",
    "log_timezone": "UTC",
}


class ClusterError(RuntimeError):
    """Any failure to create, start, stop or talk to a throwaway cluster."""


def find_bin_dir(bin_dir=None):
    """Return the directory holding initdb/pg_ctl/psql (PG 15 unless told otherwise)."""
    candidates = [bin_dir] if bin_dir else [os.environ.get("PG_BIN_DIR")] + list(DEFAULT_BIN_DIRS)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for cand in candidates:
        if cand and os.path.isfile(os.path.join(cand, "pg_ctl")):
            return cand
    raise ClusterError(
        "no PostgreSQL server binaries (pg_ctl) found in %s; install postgresql-15 "
        "or pass bin_dir=/path/to/bin (or set PG_BIN_DIR)" % ", ".join(c for c in candidates if c)
    )


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def _quote_literal(value):
    return "'%s'" % value.replace("'", "''")


def _clean_env(extra=None):
    """Environment for client programs: no inherited PG* surprises, C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["PGPASSFILE"] = "/nonexistent/cep-no-pgpass"  # never pick up a ~/.pgpass (a missing file is silent)
    env["PGCONNECT_TIMEOUT"] = "10"
    if extra:
        env.update(extra)
    return env


_LIVE = set()  # started by this process and not stopped yet (strong refs on purpose)


@atexit.register
def _stop_leftovers():
    """A test that forgot (or crashed before) destroy() must not leave a postmaster behind."""
    for cluster in list(_LIVE):
        try:
            if cluster._own_dir:  # pylint: disable=protected-access
                cluster.destroy()
            else:
                cluster.stop()
        except Exception:  # pylint: disable=broad-except
            pass


class ThrowawayCluster:
    """A disposable PostgreSQL cluster in a directory of its own.

    Layout of ``dir``: ``data/`` (PGDATA), ``run/`` (unix socket), ``postgres.log``,
    ``cluster.json`` (state for ``attach``). As root, ``data/``, ``run/`` and the
    log belong to ``postgres`` and ``dir`` itself must be traversable by it.
    """

    host = "127.0.0.1"
    user = "postgres"

    def __init__(self, dir=None, port=None, bin_dir=None, settings=None, keep=False):  # pylint: disable=redefined-builtin
        self.bin_dir = find_bin_dir(bin_dir)
        self._own_dir = dir is None
        if dir is None:
            dir = tempfile.mkdtemp(prefix="pgcluster-")
        self.dir = os.path.abspath(dir)
        self.data_dir = os.path.join(self.dir, "data")
        self.socket_dir = os.path.join(self.dir, "run")
        self.log_path = os.path.join(self.dir, LOG_FILE)
        self.port = port
        self.password = None
        self.auth = "trust"
        self.settings = dict(DEFAULT_SETTINGS)
        self.settings.update(settings or {})
        self.keep = keep  # True: do not stop at interpreter exit (CLI "start")
        self._as_root = os.geteuid() == 0

    # ----------------------------------------------------------------- helpers
    def bin(self, name):
        """Absolute path of a PostgreSQL program from this cluster's bin dir."""
        return os.path.join(self.bin_dir, name)

    def _server_cmd(self, argv):
        """argv for a server-side program (initdb, pg_ctl): as postgres when root."""
        if self._as_root:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv, input=None, env=None, check=True, server=False, timeout=120):  # pylint: disable=redefined-builtin
        cmd = self._server_cmd(argv) if server else argv
        try:
            proc = subprocess.run(
                cmd, input=input, capture_output=True, text=True, cwd=self.dir,
                env=env or _clean_env(), timeout=timeout, check=False,
            )
        except FileNotFoundError as exc:
            raise ClusterError("cannot run %s: %s" % (cmd[0], exc)) from exc
        except subprocess.TimeoutExpired as exc:
            raise ClusterError("%s timed out after %ss" % (" ".join(argv[:2]), timeout)) from exc
        if check and proc.returncode != 0:
            raise ClusterError(
                "%s failed (exit %d): %s" % (os.path.basename(argv[0]), proc.returncode,
                                             (proc.stderr or proc.stdout).strip())
            )
        return proc

    def log_tail(self, lines=30):
        """Last lines of the server log (empty string if there is none yet)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    def _chown_postgres(self, path):
        if self._as_root:
            shutil.chown(path, user="postgres", group="postgres")

    def _check_traversable(self):
        if not self._as_root:
            return
        probe = subprocess.run(
            ["runuser", "-u", "postgres", "--", "test", "-x", self.dir],
            capture_output=True, check=False,
        )
        if probe.returncode != 0:
            raise ClusterError(
                "user postgres cannot reach %s (a parent directory is not traversable, "
                "e.g. pytest's /tmp/pytest-of-root is 0700); use a directory under /tmp "
                "made with tempfile.mkdtemp() or leave dir=None" % self.dir
            )

    def _write_state(self):
        state = {"host": self.host, "port": self.port, "dir": self.dir, "user": self.user,
                 "bin_dir": self.bin_dir, "auth": self.auth}
        tmp = os.path.join(self.dir, STATE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, os.path.join(self.dir, STATE_FILE))

    @classmethod
    def attach(cls, dir):  # pylint: disable=redefined-builtin
        """A handle on a cluster created earlier (e.g. by the CLI) in ``dir``."""
        path = os.path.join(os.path.abspath(dir), STATE_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except OSError as exc:
            raise ClusterError("no throwaway cluster in %s (%s missing)" % (dir, STATE_FILE)) from exc
        obj = cls(dir=state["dir"], port=state["port"], bin_dir=state["bin_dir"], keep=True)
        obj._own_dir = False
        obj.auth = state.get("auth", "trust")
        return obj

    # -------------------------------------------------------------- lifecycle
    @property
    def initialized(self):
        return os.path.isfile(os.path.join(self.data_dir, "PG_VERSION"))

    @property
    def running(self):
        if not self.initialized:
            return False
        proc = self._run([self.bin("pg_ctl"), "status", "-D", self.data_dir], check=False, server=True)
        return proc.returncode == 0

    def init(self):
        """initdb (trust auth, UTF8, C locale, no fsync). Idempotent."""
        if self.initialized:
            return
        os.makedirs(self.dir, exist_ok=True)
        if self._as_root:
            os.chmod(self.dir, 0o711)  # mkdtemp makes 0700; postgres must traverse it
        self._check_traversable()
        for path, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o755)):
            os.makedirs(path, exist_ok=True)
            os.chmod(path, mode)
            self._chown_postgres(path)
        with open(self.log_path, "a", encoding="utf-8"):
            pass
        self._chown_postgres(self.log_path)
        self._run([self.bin("initdb"), "-D", self.data_dir, "-U", self.user, "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], server=True)
        self._write_hba("trust")

    def _write_conf(self):
        """Write our settings to data/pgcluster.conf, included from postgresql.conf
        (so ALTER SYSTEM, i.e. postgresql.auto.conf, still wins)."""
        settings = dict(self.settings)
        settings["port"] = str(self.port)
        settings["unix_socket_directories"] = self.socket_dir
        lines = ["# written by pgcluster.py on every start"]
        lines += ["%s = %s" % (key, _quote_literal(str(value))) for key, value in settings.items()]
        self._write_data_file("pgcluster.conf", "\n".join(lines) + "\n")
        main_conf = os.path.join(self.data_dir, "postgresql.conf")
        with open(main_conf, encoding="utf-8") as fh:
            included = "include 'pgcluster.conf'" in fh.read()
        if not included:
            with open(main_conf, "a", encoding="utf-8") as fh:
                fh.write("\ninclude 'pgcluster.conf'\n")

    def _write_data_file(self, name, text):
        path = os.path.join(self.data_dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o600)
        self._chown_postgres(path)

    def _write_hba(self, method):
        hba = (
            "# written by pgcluster.py: unix socket always trusted (admin path), TCP: %s\n"
            "local   all             all                     trust\n"
            "local   replication     all                     trust\n"
            "host    all             all     127.0.0.1/32    {m}\n"
            "host    replication     all     127.0.0.1/32    {m}\n"
            "host    all             all     ::1/128         {m}\n"
            "host    replication     all     ::1/128         {m}\n" % method
        ).format(m=method)
        self._write_data_file("pg_hba.conf", hba)
        self.auth = method

    def start(self):
        """initdb if needed, pick a free port, start (pg_ctl -w). Returns self."""
        self.init()
        if self.running:
            return self
        fixed_port = self.port is not None
        last_error = None
        for _attempt in range(1 if fixed_port else 4):
            if not fixed_port:
                self.port = _free_port()
            self._write_conf()
            proc = self._run([self.bin("pg_ctl"), "start", "-w", "-t", "60", "-s",
                              "-D", self.data_dir, "-l", self.log_path], check=False, server=True)
            if proc.returncode == 0:
                self._write_state()
                if not self.keep:
                    _LIVE.add(self)
                return self
            tail = self.log_tail()
            last_error = "pg_ctl start failed (exit %d): %s\n--- %s (tail) ---\n%s" % (
                proc.returncode, (proc.stderr or proc.stdout).strip(), self.log_path, tail)
            if "could not bind" not in tail and "in use" not in tail:
                break
        raise ClusterError(last_error)

    def stop(self):
        """Fast shutdown; a no-op when not running."""
        _LIVE.discard(self)
        if not self.running:
            return
        self._run([self.bin("pg_ctl"), "stop", "-w", "-t", "60", "-s", "-m", "fast",
                   "-D", self.data_dir], server=True)

    def restart(self):
        self.stop()
        return self.start()

    def destroy(self):
        """Stop and delete everything this object created (the whole dir if it made it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            for path in (self.data_dir, self.socket_dir):
                shutil.rmtree(path, ignore_errors=True)
            for name in (LOG_FILE, STATE_FILE):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.destroy()

    # ------------------------------------------------------------- connection
    def env(self, dbname="postgres", user=None, password=None):
        """PG* environment for client programs (pg_dump, psql...) reaching this cluster by TCP."""
        user = user or self.user
        if password is None and user == self.user:
            password = self.password
        extra = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": user, "PGDATABASE": dbname}
        if password is not None:
            extra["PGPASSWORD"] = password
        return _clean_env(extra)

    def dsn(self, dbname="postgres", user=None):
        """libpq keyword/value string (no password: pass it with PGPASSWORD)."""
        return "host=%s port=%s user=%s dbname=%s" % (self.host, self.port, user or self.user, dbname)

    def psql(self, sql, dbname="postgres", user=None, password=None, socket=False, check=True):
        """Run SQL through this cluster's psql, over TCP 127.0.0.1 (PGPASSWORD from env when a
        password is known), or over the trusted unix socket with ``socket=True``.
        Returns stdout (unaligned, tuples only); raises ClusterError on any SQL error."""
        env = self.env(dbname=dbname, user=user, password=password)
        if socket:
            env["PGHOST"] = self.socket_dir
        argv = [self.bin("psql"), "-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        proc = self._run(argv, input=sql, env=env, check=False)
        if check and proc.returncode != 0:
            raise ClusterError("psql on %s:%s/%s failed: %s" % (
                env["PGHOST"], self.port, dbname, proc.stderr.strip()))
        return proc.stdout

    def _admin(self, sql, dbname="postgres"):
        return self.psql(sql, dbname=dbname, socket=True)

    def createdb(self, name, owner=None):
        sql = "CREATE DATABASE %s" % _quote_ident(name)
        if owner:
            sql += " OWNER %s" % _quote_ident(owner)
        self._admin(sql + ";")

    def dropdb(self, name):
        self._admin("DROP DATABASE IF EXISTS %s WITH (FORCE);" % _quote_ident(name))

    def create_role(self, name, password=None, superuser=False, login=True):
        """Create a role (password goes into SQL via stdin, never argv)."""
        sql = "CREATE ROLE %s %s %s" % (_quote_ident(name),
                                        "LOGIN" if login else "NOLOGIN",
                                        "SUPERUSER" if superuser else "NOSUPERUSER")
        if password is not None:
            sql += " PASSWORD %s" % _quote_literal(password)
        self._admin(sql + ";")

    def set_password(self, role, password):
        """Set ``role``'s password (scram) and require scram-sha-256 for every TCP login.
        For the superuser (``postgres``) the password is remembered for psql()/env()."""
        self._admin("SET password_encryption = 'scram-sha-256'; ALTER ROLE %s PASSWORD %s;"
                    % (_quote_ident(role), _quote_literal(password)))
        if role == self.user:
            self.password = password
        self.set_auth("scram-sha-256")

    def set_auth(self, method):
        """Switch TCP authentication ('trust' or 'scram-sha-256'), reload and wait until live."""
        if method not in ("trust", "scram-sha-256"):
            raise ClusterError("auth method must be 'trust' or 'scram-sha-256', not %r" % method)
        self._write_hba(method)
        self._admin("SELECT pg_reload_conf();")
        # wait until the postmaster has really re-read pg_hba: a password-less TCP login
        # must fail under scram and succeed under trust
        probe_env = self.env(password="")
        probe_env.pop("PGPASSWORD")
        deadline = time.monotonic() + 10
        while True:
            proc = self._run([self.bin("psql"), "-X", "-w", "-A", "-t", "-c", "SELECT 1"],
                             env=probe_env, check=False)
            if (proc.returncode == 0) == (method == "trust"):
                break
            if time.monotonic() > deadline:
                raise ClusterError("pg_hba reload to %s did not take effect: %s" % (method, self.log_tail()))
            time.sleep(0.05)
        if os.path.exists(os.path.join(self.dir, STATE_FILE)):
            self._write_state()


def _main(argv=None):
    parser = argparse.ArgumentParser(description="Throwaway PostgreSQL clusters (reference platform).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="create (if needed) and start; print JSON; leave running")
    p_start.add_argument("--dir", required=True, help="cluster directory (created if missing)")
    p_start.add_argument("--port", type=int, help="TCP port (default: a free random one)")
    p_start.add_argument("--bin-dir", help="PostgreSQL bin dir (default: %s)" % DEFAULT_BIN_DIRS[0])
    p_stop = sub.add_parser("stop", help="fast shutdown of the cluster in --dir")
    p_stop.add_argument("--dir", required=True)
    p_stop.add_argument("--destroy", action="store_true", help="also delete data, socket and log")
    p_status = sub.add_parser("status", help="print JSON with running true/false")
    p_status.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "start":
            if os.path.exists(os.path.join(args.dir, STATE_FILE)):
                cluster = ThrowawayCluster.attach(args.dir)
                if args.port:
                    cluster.port = args.port
            else:
                cluster = ThrowawayCluster(dir=args.dir, port=args.port, bin_dir=args.bin_dir, keep=True)
            cluster.start()
        else:
            cluster = ThrowawayCluster.attach(args.dir)
            if args.cmd == "stop":
                if args.destroy:
                    cluster.destroy()
                else:
                    cluster.stop()
        print(json.dumps({"host": cluster.host, "port": cluster.port, "dir": cluster.dir,
                          "user": cluster.user, "running": cluster.running}))
    except ClusterError as exc:
        print("pgcluster: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
