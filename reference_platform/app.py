# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny stand-in for the platform's web app: reads from the database, serves media.

Part of the reference platform (``reference_platform/``), not of the collection. The disaster
drills and the DR playbooks' smoke tests use it to prove the platform answers after a recovery.

    PGPASSWORD=... python3 reference_platform/app.py --port 8080 --media-dir /srv/app/uploads \\
        --dsn "host=127.0.0.1 port=5432 user=app dbname=cepcomunicacion"

- ``GET /health``: 200 ``{"status": "ok", "database": "up"}`` when the database answers, else 503.
- ``GET /courses``: 200 with a JSON list of the courses (id, code, title), read from the database.
- ``GET /media/<path>``: the file ``<media-dir>/<path>``; 404 when missing, never outside media-dir.

Each request opens its own connection, so the app survives a database being swapped under it.
The password comes from PGPASSWORD (or ~/.pgpass), never from the command line. On start, one
JSON line ``{"host", "port", "pid"}`` goes to stdout (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

try:
    import psycopg2
except ImportError:  # pragma: no cover
    sys.exit("app.py needs psycopg2 (pip install psycopg2-binary)")

CONNECT_TIMEOUT = 3
COURSES_SQL = "SELECT id, code, title FROM public.courses ORDER BY id"


class PlatformApp:
    """What the handler needs: where the database is and where the media lives."""

    def __init__(self, dsn, media_dir):
        self.dsn = dsn
        self.media_dir = os.path.realpath(media_dir)

    def query(self, statement):
        conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT)
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        finally:
            conn.close()

    def media_file(self, relative):
        """The real path of a media file, or None when missing or outside the media directory."""
        candidate = os.path.realpath(os.path.join(self.media_dir, relative))
        if not candidate.startswith(self.media_dir + os.sep) or not os.path.isfile(candidate):
            return None
        return candidate


class Handler(BaseHTTPRequestHandler):
    server_version = "cep-reference-app/1"
    app = None  # set by make_server

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    def _send(self, status, body, content_type="application/json"):
        if not isinstance(body, bytes):
            body = (json.dumps(body) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # pylint: disable=invalid-name
        path = unquote(urlsplit(self.path).path)
        if path == "/health":
            try:
                self.app.query("SELECT 1")
            except psycopg2.Error as exc:
                self._send(503, {"status": "error", "database": "down", "error": str(exc).strip()})
                return
            self._send(200, {"status": "ok", "database": "up"})
        elif path == "/courses":
            try:
                rows = self.app.query(COURSES_SQL)
            except psycopg2.Error as exc:
                self._send(503, {"error": str(exc).strip()})
                return
            self._send(200, [{"id": row[0], "code": row[1], "title": row[2]} for row in rows])
        elif path.startswith("/media/"):
            found = self.app.media_file(path[len("/media/"):])
            if found is None:
                self._send(404, {"error": "not found"})
                return
            with open(found, "rb") as handle:
                body = handle.read()
            self._send(200, body, mimetypes.guess_type(found)[0] or "application/octet-stream")
        else:
            self._send(404, {"error": "not found"})


def make_server(dsn, media_dir, host="127.0.0.1", port=0):
    handler = type("BoundHandler", (Handler,), {"app": PlatformApp(dsn, media_dir)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Reference platform web app (for drills and the demo).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port; 0 picks a free one")
    parser.add_argument("--media-dir", required=True, help="directory served under /media/")
    parser.add_argument("--dsn",
                        help="libpq connection string without the password (it comes from PGPASSWORD); default: "
                             "the DATABASE_URL environment variable (the app's .env), which may hold the password")
    args = parser.parse_args(argv)
    if args.dsn is None:
        args.dsn = os.environ.get("DATABASE_URL", "")
        if not args.dsn:
            parser.error("give --dsn or set DATABASE_URL")
    elif "password" in args.dsn.lower() or ":" in args.dsn.split("@")[0].partition("://")[2]:
        parser.error("put the password in PGPASSWORD, not in --dsn (command lines are visible to every user)")
    server = make_server(args.dsn, args.media_dir, args.host, args.port)
    # SIGTERM: shut down cleanly (serve_forever returns), from a thread so the handler does not deadlock
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(json.dumps({"host": server.server_address[0], "port": server.server_address[1], "pid": os.getpid()}),
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
