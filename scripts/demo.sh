#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL with the reference platform's data, backed up by the
# collection through ansible-playbook against localhost. Everything lives under DEMO_PREFIX.
#   DEMO_PREFIX (default /tmp/cepcomunicacion-demo), DEMO_SIZE (tiny, small (default), 1GB, 200MB...)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${DEMO_PREFIX:-/tmp/cepcomunicacion-demo}
SIZE=${DEMO_SIZE:-small}
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
START=$(date +%s)

step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - START))" "$*"; }

step "installing what the demo needs (apt packages, .venv)"
"$ROOT/scripts/bootstrap.sh"

mkdir -p "$PREFIX/collections/ansible_collections/cepcomunicacion"
ln -sfn "$ROOT" "$PREFIX/collections/ansible_collections/cepcomunicacion/backup"

step "starting a throwaway PostgreSQL under $PREFIX/pg"
"$PY" "$ROOT/reference_platform/pgcluster.py" start --dir "$PREFIX/pg" >"$PREFIX/pg.json"
PORT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$PREFIX/pg.json")
trap '"$PY" "$ROOT/reference_platform/pgcluster.py" stop --dir "$PREFIX/pg" >/dev/null' EXIT

step "loading the reference platform's data ($SIZE)"
PGPASSFILE=/nonexistent "$PY" "$ROOT/reference_platform/generate_data.py" \
    --host 127.0.0.1 --port "$PORT" --user postgres --dbname cepcomunicacion --create-db --reset --size "$SIZE" >/dev/null

step "backing it up with cepcomunicacion.backup.pg_backup (ansible-playbook against localhost)"
ANSIBLE_COLLECTIONS_PATH="$PREFIX/collections" ANSIBLE_NOCOLOR=1 \
    "$VENV/bin/ansible-playbook" -i localhost, -c local \
    -e "ansible_python_interpreter=$PY" -e "demo_port=$PORT" -e "demo_backup_root=$PREFIX/backups" \
    "$ROOT/demo/backup.yml"

step "done. The backups are in $PREFIX/backups; check one by hand with:"
newest=$(find "$PREFIX/backups/database" -maxdepth 1 -name '*.dump' | sort | tail -n 1)
printf '    (cd %s && sha256sum -c %s.sha256)\n' "$(dirname "$newest")" "$(basename "$newest")"
printf '    the database server is stopped again; remove everything with: make demo-clean\n'
