#!/usr/bin/env bash
# mm2.sh: run MirrorMaker 2 in dedicated mode (org.apache.kafka.connect.mirror.MirrorMaker)
# from Maven Central jars, same KAFKA_VERSION as kafka.sh, separate classpath.
#
# Usage:
#   mm2.sh up NAME PROPS_FILE [MirrorMaker args, e.g. --clusters hub]
#                              start; waits (bounded) for "Kafka MirrorMaker started"
#   mm2.sh down NAME           SIGTERM, SIGKILL after MM2_STOP_TIMEOUT (20 s)
#   mm2.sh kill NAME           SIGKILL now
#   mm2.sh status NAME         "running pid N" (exit 0) | "stopped" (exit 3) | "absent" (exit 4)
#   mm2.sh clean NAME          down + delete NAME's logs
#   mm2.sh fetch               download the MM2 jars for KAFKA_VERSION
#
# Environment: KAFKA_VERSION (default 4.4.0), MM2_VERSION (connect-mirror version,
# default KAFKA_VERSION; connect-mirror 4.4.0 is not on the Maven Central mirror we
# reach, so with 4.4.0 use MM2_VERSION=4.3.1), KAFKA_WORK (as kafka.sh; NAME lives in
# $KAFKA_WORK/mm2/NAME), MM2_HEAP_OPTS (default "-Xms256m -Xmx1g"), MM2_JVM_OPTS,
# MM2_START_TIMEOUT (default 90 s), KAFKA_LOG_LEVEL (default INFO).
# Example properties: mm2-example.properties beside this script.
set -euo pipefail
SELF=mm2.sh
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
MM2_VERSION=${MM2_VERSION:-$KAFKA_VERSION}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

marker() { printf '%s\n' "-Dedgemirror.mm2.dir=$1"; }

no_jars_hint() {
	echo "no MirrorMaker $MM2_VERSION jars; if connect-mirror $MM2_VERSION is not published where Maven looks," \
		"set MM2_VERSION to another release (4.3.1 works with 4.4 brokers)"
}

cmd_up() {
	[[ $# -ge 2 ]] || usage
	local name=$1 props=$2; shift 2
	check_name "$name"
	[[ -f "$props" ]] || die "no properties file $props"
	props=$(cd "$(dirname "$props")" && pwd)/$(basename "$props")
	local dir=$WORK/mm2/$name
	mkdir -p "$dir/logs"
	lock 9 "$dir/.lock" 180
	if pid_alive "$dir/mm2.pid" "$(marker "$dir")"; then
		log "$name already running (pid $(cat "$dir/mm2.pid"))"
		return 0
	fi
	local t0; t0=$(now_ms)
	ensure_java_maven
	local cpf; cpf=$(mm2_classpath "$MM2_VERSION") || die "$(no_jars_hint)"
	local cp; cp=$(cat "$cpf")
	local heap=(${MM2_HEAP_OPTS:--Xms256m -Xmx1g})
	local extra=(${MM2_JVM_OPTS:-})
	local logflag; logflag=$(KAFKA_VERSION=$MM2_VERSION write_log_config "$dir")
	mapfile -t common < <(jvm_opts_common)
	printf '%s\n' "$props" >"$dir/props"
	[[ -f "$dir/logs/mm2.out" ]] && mv -f "$dir/logs/mm2.out" "$dir/logs/mm2.out.1"
	setsid nohup java "${heap[@]}" "${common[@]}" "${extra[@]}" "$logflag" "-Dkafka.logs.dir=$dir/logs" \
		"$(marker "$dir")" -cp "$cp" org.apache.kafka.connect.mirror.MirrorMaker "$props" "$@" \
		</dev/null >"$dir/logs/mm2.out" 2>&1 9>&- 8>&- 7>&- &
	local pid=$!
	printf '%s\n' "$pid" >"$dir/mm2.pid"
	local deadline=$(($(date +%s) + ${MM2_START_TIMEOUT:-90}))
	while ! grep -q 'Kafka MirrorMaker started' "$dir/logs/mm2.out"; do
		if ! started_alive "$pid"; then
			tail -n 40 "$dir/logs/mm2.out" >&2
			rm -f "$dir/mm2.pid"
			die "MirrorMaker $name exited during start-up (log: $dir/logs/mm2.out)"
		fi
		if [[ $(date +%s) -ge $deadline ]]; then
			tail -n 40 "$dir/logs/mm2.out" >&2
			stop_pid "$dir/mm2.pid" "$(marker "$dir")" 5
			die "MirrorMaker $name not started after ${MM2_START_TIMEOUT:-90}s (log: $dir/logs/mm2.out)"
		fi
		sleep 0.3
	done
	log "MirrorMaker $name (Kafka $MM2_VERSION) started in $(($(now_ms) - t0)) ms, pid $(cat "$dir/mm2.pid"), log $dir/logs/mm2.out"
}

existing_dir() {
	check_name "$1"
	local dir=$WORK/mm2/$1
	[[ -d "$dir" ]] || die "no MirrorMaker named $1 under $WORK/mm2"
	printf '%s\n' "$dir"
}

cmd_down() {
	[[ $# -eq 1 ]] || usage
	local dir; dir=$(existing_dir "$1")
	lock 9 "$dir/.lock" 180
	stop_pid "$dir/mm2.pid" "$(marker "$dir")" "${MM2_STOP_TIMEOUT:-20}"
	log "$1 stopped"
}

cmd_kill() {
	[[ $# -eq 1 ]] || usage
	local dir; dir=$(existing_dir "$1")
	lock 9 "$dir/.lock" 180
	stop_pid "$dir/mm2.pid" "$(marker "$dir")" 0
	log "$1 killed"
}

cmd_status() {
	[[ $# -eq 1 ]] || usage
	check_name "$1"
	local dir=$WORK/mm2/$1
	[[ -d "$dir" ]] || { echo absent; exit 4; }
	if pid_alive "$dir/mm2.pid" "$(marker "$dir")"; then
		echo "running pid $(cat "$dir/mm2.pid")"
		return 0
	fi
	echo stopped
	exit 3
}

cmd_clean() {
	[[ $# -eq 1 ]] || usage
	check_name "$1"
	local dir=$WORK/mm2/$1
	[[ -d "$dir" ]] || return 0
	(
		lock 9 "$dir/.lock" 180
		stop_pid "$dir/mm2.pid" "$(marker "$dir")" "${MM2_STOP_TIMEOUT:-20}"
	)
	rm -rf "$dir"
	log "$1 removed"
}

cmd_fetch() {
	local t0; t0=$(now_ms)
	local f; f=$(mm2_classpath "$MM2_VERSION") || die "$(no_jars_hint)"
	log "MirrorMaker 2 for Kafka $MM2_VERSION: $(tr ':' '\n' <"$f" | wc -l) jars, $(tr ':' '\n' <"$f" | xargs du -cb | tail -n 1 | cut -f1) bytes, ready in $(($(now_ms) - t0)) ms"
}

[[ $# -ge 1 ]] || usage
cmd=$1; shift
case $cmd in
up) cmd_up "$@" ;;
down | stop) cmd_down "$@" ;;
kill) cmd_kill "$@" ;;
status) cmd_status "$@" ;;
clean) cmd_clean "$@" ;;
fetch) cmd_fetch "$@" ;;
-h | --help | help) usage ;;
*) log "unknown command $cmd"; usage ;;
esac
