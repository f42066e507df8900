#!/usr/bin/env bash
# make demo: the whole collection on this machine in a few minutes, everything under one prefix.
#
# A throwaway PostgreSQL with the reference platform's data, media and config files, a local S3 peer
# (moto_server) and the reference app, all on 127.0.0.1; then, through ansible-playbook against
# localhost: install (the schedule goes to a cron file under the prefix, never /etc/cron.d), every
# backup, the offsite push, the health check, and two disasters recovered by their DR playbooks
# (database_corruption, accidental_deletion), whose reports are printed at the end.
#
#   scripts/demo.sh            run the demo (make demo)
#   scripts/demo.sh --clean    stop whatever still runs and remove the prefix (make demo-clean)
#
# Environment:
#   DEMO_PREFIX          where everything goes (default /tmp/cepcomunicacion-demo); nothing is written elsewhere
#   DEMO_SIZE            reference data size: tiny, small (default, ~20 MB), medium, 1GB, or <n>MB/GB
#   DEMO_SKIP_BOOTSTRAP  1: do not run scripts/bootstrap.sh (apt packages and .venv already there)
#   VENV                 the virtualenv (default <repo>/.venv)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${DEMO_PREFIX:-/tmp/cepcomunicacion-demo}
SIZE=${DEMO_SIZE:-small}
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
TOOL=$ROOT/demo/demo_platform.py
MARKER=.cepcomunicacion-demo

case $PREFIX in
    /*) PREFIX=${PREFIX%/} ;;
    *) PREFIX=$(pwd)/$PREFIX ;;
esac
if [[ -z $PREFIX || $PREFIX == / ]]; then
    echo "demo: DEMO_PREFIX must be a directory of its own, not '/'" >&2
    exit 2
fi

SERVER=$PREFIX/server        # what the backup_server role installs (backups, config, command, logs, cron file)
APP=$PREFIX/platform         # the platform's media and config files
RUN=$PREFIX/run              # pid files, the writer's pause file
LOGS=$PREFIX/logs            # ansible-playbook and tool output
RESULTS=$PREFIX/results      # checksums, verifications, summary.json
VARS=$PREFIX/vars.json       # the role's variables (holds the demo's S3 key: 0600)
DB=cepcomunicacion
BUCKET=cepcomunicacion-demo

# ------------------------------------------------------------------------------------------ processes
# Every process the demo starts carries CEP_DEMO_PREFIX in its environment; it is stopped only when
# its pid file names it and /proc confirms it is ours (a recycled pid is never killed).
ours() {
    local pid=$1
    [[ -r /proc/$pid/environ ]] && tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "CEP_DEMO_PREFIX=$PREFIX"
}

stop_pidfile() {
    local file=$1 pid i
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$file"
}

stop_all() {
    local name
    for name in writer app moto; do
        stop_pidfile "$RUN/$name.pid"
    done
    if [[ -f $PREFIX/pg/cluster.json ]]; then
        "$PY" "$ROOT/reference_platform/pgcluster.py" stop --dir "$PREFIX/pg" >/dev/null 2>&1 || true
    fi
}

clean() {
    if [[ ! -e $PREFIX ]]; then
        echo "demo: nothing to clean ($PREFIX does not exist)"
        return 0
    fi
    if [[ ! -f $PREFIX/$MARKER ]]; then
        echo "demo: $PREFIX was not made by the demo (no $MARKER in it); not removing it" >&2
        return 2
    fi
    stop_all
    rm -rf "$PREFIX"
    echo "demo: stopped the demo's processes and removed $PREFIX"
}

if [[ ${1:-} == --clean ]]; then
    clean
    exit $?
elif [[ -n ${1:-} ]]; then
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    [[ $1 == -h || $1 == --help ]] && exit 0
    exit 2
fi

# ------------------------------------------------------------------------------------------ output
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
secs() { local ms=$1; printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
START_MS=$(now_ms)
PHASE_MS=$START_MS
PHASE=""
PHASE_LOG=""
CHILD=""  # the ansible-playbook (or command) running now; stopped on Ctrl-C
TIMINGS=()

phase() {  # phase "what happens": one line per phase, finished by done_ (or by the failure report)
    PHASE=$1
    PHASE_LOG=""
    PHASE_MS=$(now_ms)
    printf '[%6ss] %s' "$(secs $((PHASE_MS - START_MS)))" "$PHASE"
}

done_() {  # done_ "short result"
    local took=$(($(now_ms) - PHASE_MS))
    printf ' -> %s (%s s)\n' "$1" "$(secs "$took")"
    TIMINGS+=("$(secs "$took") $PHASE")
    PHASE=""
    PHASE_LOG=""
}

note() { printf '          %s\n' "$@"; }

run_logged() {  # run_logged LOG cmd...: output to LOG, a dot every 5 s while it runs (or growth of $WATCH)
    local log=$1 pid ticks=0 rc=0 size shown=""
    shift
    PHASE_LOG=$log
    "$@" >>"$log" 2>&1 </dev/null &
    pid=$!
    CHILD=$pid
    while kill -0 "$pid" 2>/dev/null; do
        sleep 0.2
        ticks=$((ticks + 1))
        if ((ticks % 25 == 0)); then
            size=""
            if [[ -n ${WATCH:-} ]]; then size=$(du -sh "$WATCH" 2>/dev/null | cut -f1) || size=""; fi
            if [[ -n $size && $size != "$shown" ]]; then
                printf ' %s' "$size"
                shown=$size
            else
                printf '.'
            fi
        fi
    done
    wait "$pid" || rc=$?
    CHILD=""
    return "$rc"
}

playbook() {  # playbook NAME PLAYBOOK [ansible-playbook args]: against localhost with the demo's variables
    local name=$1 book=$2
    shift 2
    run_logged "$LOGS/ansible-$name.log" "$VENV/bin/ansible-playbook" -i localhost, -c local -e "@$VARS" "$book" "$@"
}

tool() { "$PY" "$TOOL" "$@"; }

newest() {  # newest GLOB-RESULTS...: the last match by name (names carry the UTC time), sidecars left out
    local match last=""
    for match in "$@"; do
        if [[ -e $match && $match != *.sha256 && $match != *.meta.json && $match != *.md ]]; then last=$match; fi
    done
    [[ -n $last ]] && printf '%s\n' "$last"
}

recovered() {  # recovered SCENARIO: outcome and RTO from the newest report of the scenario
    local report
    report=$(newest "$SERVER"/log/dr-"$1"-*.json)
    printf '%s, RTO %s' "$(json_get "$report" outcome)" "$(json_get "$report" rto)"
}

json_get() {  # json_get FILE_OR_- KEY...: one value from a JSON document
    "$PY" -c 'import json, sys
data = json.load(sys.stdin if sys.argv[1] == "-" else open(sys.argv[1]))
for key in sys.argv[2:]:
    data = data[int(key)] if isinstance(data, list) else data[key]
print(data)' "$@"
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    if ((rc != 0)); then
        printf '\n\nFAILED (exit %d)%s\n' "$rc" "${PHASE:+ during: $PHASE}"
        if [[ -n $PHASE_LOG && -f $PHASE_LOG ]]; then
            printf -- '--- last lines of %s ---\n' "$PHASE_LOG"
            tail -n 30 "$PHASE_LOG"
            printf -- '--- end of %s ---\n' "$PHASE_LOG"
        fi
    fi
    if [[ -d $PREFIX ]]; then
        stop_all
        printf 'Stopped PostgreSQL, the app, the writer and the S3 peer. Everything is left in %s\n' "$PREFIX"
        printf 'Remove it with: make demo-clean%s\n' "$([[ $PREFIX != /tmp/cepcomunicacion-demo ]] && printf ' DEMO_PREFIX=%q' "$PREFIX")"
    fi
    exit "$rc"
}

# The whole run is one function, read completely before it starts (editing this file meanwhile is harmless).
main() {
# ------------------------------------------------------------------------------------------ prefix
if [[ -e $PREFIX ]]; then
    if [[ -f $PREFIX/$MARKER ]]; then
        echo "Removing the previous demo in $PREFIX"
        clean >/dev/null
    elif [[ -n $(ls -A "$PREFIX" 2>/dev/null) ]]; then
        echo "demo: $PREFIX exists, is not empty and was not made by the demo; choose another DEMO_PREFIX" >&2
        exit 2
    elif [[ ! -O $PREFIX ]]; then
        echo "demo: $PREFIX belongs to another user; choose another DEMO_PREFIX" >&2
        exit 2
    fi
fi
mkdir -p "$PREFIX"
chmod 0755 "$PREFIX"  # the throwaway PostgreSQL runs as user postgres when we are root
touch "$PREFIX/$MARKER"
mkdir -p "$SERVER"/{bin,cron.d,logrotate.d,run} "$APP/app/uploads" "$RUN" "$LOGS" "$RESULTS" "$PREFIX/tmp" \
    "$PREFIX/ansible/collections/ansible_collections/cepcomunicacion"
ln -sfn "$ROOT" "$PREFIX/ansible/collections/ansible_collections/cepcomunicacion/backup"
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Nothing outside the prefix: temp files, Ansible's home and temp dirs, no bytecode next to the sources.
export CEP_DEMO_PREFIX=$PREFIX
export TMPDIR=$PREFIX/tmp
export PYTHONDONTWRITEBYTECODE=1
export ANSIBLE_HOME=$PREFIX/ansible
export ANSIBLE_LOCAL_TEMP=$PREFIX/ansible/tmp
export ANSIBLE_REMOTE_TEMP=$PREFIX/ansible/remote-tmp
export ANSIBLE_COLLECTIONS_PATH=$PREFIX/ansible/collections
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_PIPELINING=1
unset ANSIBLE_LOG_PATH ANSIBLE_CONFIG
export PGPASSFILE=/nonexistent/cep-demo-no-pgpass
# moto accepts any key; these are the demo's, written only into files under the prefix (0600).
export AWS_ACCESS_KEY_ID=cep-demo-access-key AWS_SECRET_ACCESS_KEY=cep-demo-secret-key
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

printf 'cepcomunicacion.backup demo: data size %s, everything under %s\n' "$SIZE" "$PREFIX"

# ------------------------------------------------------------------------------------------ 1. the platform
if [[ ${DEMO_SKIP_BOOTSTRAP:-0} == 1 ]]; then
    [[ -x $PY && -x $VENV/bin/ansible-playbook ]] || { echo "demo: DEMO_SKIP_BOOTSTRAP=1 but $VENV is not ready" >&2; exit 2; }
else
    phase "Installing what the demo needs (Debian packages, $VENV)"
    run_logged "$LOGS/bootstrap.log" env -u TMPDIR "$ROOT/scripts/bootstrap.sh"
    done_ "ready"
fi

phase "Starting a throwaway PostgreSQL on 127.0.0.1"
PHASE_LOG=$LOGS/pgcluster.log
"$PY" "$ROOT/reference_platform/pgcluster.py" start --dir "$PREFIX/pg" >"$RUN/pg.json" 2>"$LOGS/pgcluster.log"
PG_PORT=$(json_get "$RUN/pg.json" port)
DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=$DB"
done_ "port $PG_PORT, data in $PREFIX/pg"

phase "Loading the reference data ($SIZE)"
PHASE_LOG=$LOGS/generate_data.log
"$PY" "$ROOT/reference_platform/generate_data.py" --host 127.0.0.1 --port "$PG_PORT" --user postgres \
    --dbname "$DB" --create-db --size "$SIZE" 2>&1 >"$RESULTS/generate_data.json" | tee "$LOGS/generate_data.log" | tool progress
LOADED=$(tool loaded "$RESULTS/generate_data.json")
done_ "$LOADED"

phase "Writing the platform's media and config files"
MEDIA=$(tool media "$APP/app/uploads" "$SIZE")
tool config "$APP/app" "$PG_PORT"
done_ "$(json_get - files <<<"$MEDIA") media files; .env, docker-compose.yml, nginx/ in $APP/app"

phase "Starting the local S3 peer (moto_server)"
S3_PORT=$(tool free-port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$LOGS/moto.log" 2>&1 </dev/null &
echo $! >"$RUN/moto.pid"
PHASE_LOG=$LOGS/moto.log
tool wait-port "$S3_PORT" 30
S3=http://127.0.0.1:$S3_PORT
tool bucket "$S3" "$BUCKET"
done_ "$S3, bucket $BUCKET"

phase "Starting the reference app"
"$PY" "$ROOT/reference_platform/app.py" --port 0 --media-dir "$APP/app/uploads" --dsn "$DSN" \
    >"$RUN/app.json" 2>"$LOGS/app.log" </dev/null &
echo $! >"$RUN/app.pid"
PHASE_LOG=$LOGS/app.log
for _ in $(seq 100); do [[ -s $RUN/app.json ]] && break; sleep 0.1; done
APP_URL=http://127.0.0.1:$(json_get "$RUN/app.json" port)
done_ "$APP_URL"

# The backup_server role's variables: every path under the prefix (PRODUCT.md's defaults are /etc, /var, /opt).
export PG_PORT S3 APP_URL SERVER APP BUCKET DB RUN
umask 077
"$PY" - "$VARS" <<'PYEOF'
import getpass, grp, json, os, sys
env = os.environ
server = env['SERVER']
variables = {
    'target': 'localhost', 'ansible_become': False, 'ansible_python_interpreter': sys.executable,
    'backup_server_manage_packages': False,
    'backup_server_user': getpass.getuser(), 'backup_server_group': grp.getgrgid(os.getgid()).gr_name,
    'backup_server_root': server + '/backups',
    'backup_server_install_dir': server + '/opt',
    'backup_server_command_link': server + '/bin/cepcomunicacion-backup',
    'backup_server_config_file': server + '/etc/backup.conf',
    'backup_server_log_dir': server + '/log',
    'backup_server_status_file': server + '/run/status.json',
    'backup_server_cron_file': server + '/cron.d/cepcomunicacion-backup',
    'backup_server_logrotate_file': server + '/logrotate.d/cepcomunicacion-backup',
    'backup_server_db_port': int(env['PG_PORT']),
    'backup_server_db_name': env['DB'],
    'backup_server_media_paths': [env['APP'] + '/app/uploads'],
    'backup_server_config_paths': [env['APP'] + '/app/.env', env['APP'] + '/app/docker-compose.yml', env['APP'] + '/app/nginx'],
    'backup_server_offsite_enabled': True,
    'backup_server_offsite_bucket': env['BUCKET'],
    'backup_server_offsite_prefix': 'demo',
    'backup_server_offsite_endpoint_url': env['S3'],
    'backup_server_offsite_region': 'us-east-1',
    'backup_server_offsite_access_key': env['AWS_ACCESS_KEY_ID'],
    'backup_server_offsite_secret_key': env['AWS_SECRET_ACCESS_KEY'],
    'recovery_smoke_app_url': env['APP_URL'],
    'recovery_smoke_media_paths': ['user1/photo.jpg', 'public/docs/guía del curso.txt'],
    'recovery_writers': [{'name': 'demo writer', 'stop': ['touch', env['RUN'] + '/writer.paused'],
                          'start': ['rm', '-f', env['RUN'] + '/writer.paused']}],
}
with open(sys.argv[1], 'w') as handle:
    json.dump(variables, handle, indent=2)
PYEOF
umask 022
COMMAND=(env -i PATH=/usr/bin:/bin "TMPDIR=$TMPDIR" "CEP_DEMO_PREFIX=$PREFIX" "$SERVER/bin/cepcomunicacion-backup" --config "$SERVER/etc/backup.conf" --quiet)

# ------------------------------------------------------------------------------------------ 2. install, back up, check
phase "Installing with playbooks/install.yml (role backup_server)"
playbook install "$ROOT/playbooks/install.yml"
done_ "command in $SERVER/bin, schedule in $SERVER/cron.d (not /etc/cron.d)"

phase "Backing up with playbooks/backup.yml (database, config, media)"
tool checksums "$DSN" "$RESULTS/checksums-backup.json"  # nothing writes until the backups are done
WATCH=$SERVER/backups/database playbook backup "$ROOT/playbooks/backup.yml"
DUMP=$(newest "$SERVER"/backups/database/cepcomunicacion_*.dump*)
done_ "$(basename "$DUMP") ($(du -h "$DUMP" | cut -f1)), config archive, media snapshot"

phase "Weekly backup with the installed command, as cron runs it"
WATCH=$SERVER/backups/database/weekly run_logged "$LOGS/command-weekly.log" "${COMMAND[@]}" database --weekly
done_ "$(basename "$(newest "$SERVER"/backups/database/weekly/*_weekly_*.dump*)")"

phase "Pushing the backups offsite (offsite_sync to the S3 peer)"
playbook offsite "$ROOT/demo/offsite.yml"
tool offsite "$S3" "$BUCKET" >"$RESULTS/offsite-objects.json"
done_ "$(json_get "$RESULTS/offsite-objects.json" count) objects in s3://$BUCKET/demo/"

phase "Checking with playbooks/check.yml (with a restore test)"
playbook check "$ROOT/playbooks/check.yml" -e check_restore_test=true
done_ "$(grep -o 'healthy: [A-Za-z]*' "$LOGS/ansible-check.log" | tail -n 1)"

"$PY" "$TOOL" writer "$DSN" "$RUN/writer.paused" >"$LOGS/writer.log" 2>&1 </dev/null &
echo $! >"$RUN/writer.pid"

# ------------------------------------------------------------------------------------------ 3. disaster 1
phase "DISASTER 1, app and writer running: payments dropped, titles overwritten, a heap file destroyed"
sleep 1  # the writer's rows after the backup: lost by a full restore, and counted in the report
CORRUPT=$(tool corrupt "$PREFIX/pg" "$DSN")
DISASTER_TIME=$(json_get - disaster_time <<<"$CORRUPT")
done_ "$(json_get - symptom <<<"$CORRUPT")"

phase "Recovering with playbooks/dr/database_corruption.yml"
playbook dr-database_corruption "$ROOT/playbooks/dr/database_corruption.yml" \
    -e dr_confirm=true -e "dr_disaster_time=$DISASTER_TIME"
done_ "$(recovered database_corruption)"

phase "Verifying: every table equals the recovery point"
sleep 1  # let the restarted writer add a row or two: later writes must not disturb the comparison
PHASE_LOG=$RESULTS/verify-database_corruption.json
VERIFIED=$(tool verify database_corruption "$RESULTS" "$DSN")
done_ "$VERIFIED"

# ------------------------------------------------------------------------------------------ 4. disaster 2
phase "DISASTER 2: DELETE FROM enrollments WHERE course_id = 7, while other writes continue"
tool delete "$DSN" "$RESULTS/deletion.json" >/dev/null
DELETION_TIME=$(json_get "$RESULTS/deletion.json" deletion_time)
done_ "$(json_get "$RESULTS/deletion.json" rows_deleted) rows deleted at $DELETION_TIME"

phase "The nightly backup runs after the mistake (installed command)"
WATCH=$SERVER/backups/database run_logged "$LOGS/command-database.log" "${COMMAND[@]}" database
done_ "a newer dump without the rows; the recovery must pick the one before the deletion"

phase "Recovering with playbooks/dr/accidental_deletion.yml"
tool verify accidental_deletion-before "$RESULTS" "$DSN"
playbook dr-accidental_deletion "$ROOT/playbooks/dr/accidental_deletion.yml" -e dr_confirm=true \
    -e dr_table=public.enrollments -e "dr_where='course_id = 7'" -e "dr_deletion_time=$DELETION_TIME"
done_ "$(recovered accidental_deletion)"

phase "Verifying: deleted rows back, later writes kept"
PHASE_LOG=$RESULTS/verify-accidental_deletion.json
VERIFIED=$(tool verify accidental_deletion "$RESULTS" "$DSN")
done_ "$VERIFIED"

# ------------------------------------------------------------------------------------------ 5. reports
stop_pidfile "$RUN/writer.pid"
tool offsite "$S3" "$BUCKET" >"$RESULTS/offsite-objects.json"
REPORT_CORRUPTION=$(newest "$SERVER"/log/dr-database_corruption-*.json)
REPORT_DELETION=$(newest "$SERVER"/log/dr-accidental_deletion-*.json)
printf '\nDrill reports (full text: %s, %s)\n' "${REPORT_CORRUPTION%.json}.md" "${REPORT_DELETION%.json}.md"
for report in "$REPORT_CORRUPTION" "$REPORT_DELETION"; do
    tool report "$report" | sed '1s/^/  /; 2,$s/^/      /'
done

WALL_MS=$(($(now_ms) - START_MS))
export PREFIX SIZE WALL_MS REPORT_CORRUPTION REPORT_DELETION RESULTS DUMP LOGS
printf '%s\n' "${TIMINGS[@]}" >"$RESULTS/timings.txt"
"$PY" - "$RESULTS/summary.json" <<'PYEOF'
import json, os, sys
env = os.environ
def load(path):
    with open(path) as handle:
        return json.load(handle)
steps = []
with open(os.path.join(env['RESULTS'], 'timings.txt')) as handle:
    for line in handle:
        took, name = line.rstrip('\n').split(' ', 1)
        steps.append({'phase': name, 'seconds': float(took)})
summary = {
    'prefix': env['PREFIX'], 'size': env['SIZE'], 'wall_seconds': int(env['WALL_MS']) / 1000.0,
    'phases': steps,
    'data': load(os.path.join(env['RESULTS'], 'generate_data.json')),
    'offsite': load(os.path.join(env['RESULTS'], 'offsite-objects.json')),
    'reports': {},
    'verification': {s: load(os.path.join(env['RESULTS'], 'verify-%s.json' % s))['equal']
                     for s in ('database_corruption', 'accidental_deletion')},
}
for scenario, path in (('database_corruption', env['REPORT_CORRUPTION']), ('accidental_deletion', env['REPORT_DELETION'])):
    report = load(path)
    summary['reports'][scenario] = {'json': path, 'markdown': path[:-5] + '.md', 'outcome': report['outcome'],
                                    'rto': report['rto'], 'rto_seconds': report['rto_seconds'],
                                    'recovery_point': report['recovery_point'].get('path')}
summary['offsite']['objects'] = [o['key'] for o in summary['offsite']['objects']]
with open(sys.argv[1], 'w') as handle:
    json.dump(summary, handle, indent=2)
PYEOF
printf '\nDone in %s s. Summary: %s\n' "$(secs "$WALL_MS")" "$RESULTS/summary.json"
printf 'Look around: backups in %s/backups, logs and reports in %s/log, Ansible output in %s\n' "$SERVER" "$SERVER" "$LOGS"
}

main "$@"
