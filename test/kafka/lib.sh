# shellcheck shell=bash
# Shared helpers for kafka.sh and mm2.sh: work-dir layout, tool installation,
# Maven classpath resolution (cached per Kafka version) and process control.
# Sourced, never run. Every wait here is bounded.

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The work dir: KAFKA_WORK if set (relative paths are taken from the caller's
# cwd), else .work beside this script, so the scripts work from any cwd.
if [[ -n "${KAFKA_WORK:-}" ]]; then
	mkdir -p "$KAFKA_WORK"
	WORK=$(cd "$KAFKA_WORK" && pwd)
else
	WORK=$LIB_DIR/.work
	mkdir -p "$WORK"
fi
CP_DIR=$WORK/_cp/$KAFKA_VERSION

log() { printf '%s: %s\n' "${SELF:-kafka}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_name() {
	[[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad name '$1' (letters, digits, _ . - only)"
}

kafka_major() { echo "${KAFKA_VERSION%%.*}"; }

now_ms() { date +%s%3N; }

# lock FD FILE TIMEOUT_S: take an exclusive lock, bounded.
lock() {
	local fd=$1 file=$2 timeout=${3:-300}
	command -v flock >/dev/null || return 0
	eval "exec $fd>\"$file\""
	flock -w "$timeout" "$fd" || die "could not lock $file within ${timeout}s"
}

# Fresh CI machines may lack Java/Maven: install them from Debian.
ensure_java_maven() {
	local need=()
	command -v java >/dev/null || need+=(openjdk-17-jre-headless)
	command -v keytool >/dev/null || need+=(openjdk-17-jre-headless)
	command -v mvn >/dev/null || need+=(maven)
	[[ ${#need[@]} -eq 0 ]] && return 0
	log "installing ${need[*]} from Debian"
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	DEBIAN_FRONTEND=noninteractive timeout 900 "${sudo[@]}" apt-get update -q >&2 || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive timeout 900 "${sudo[@]}" apt-get install -y -q --no-install-recommends \
		$(printf '%s\n' "${need[@]}" | sort -u) >&2 || die "apt-get install ${need[*]} failed"
}

# write_pom FILE ARTIFACT_COORDS... : a throw-away POM whose only purpose is
# to let Maven resolve the runtime classpath of the given g:a:v coordinates.
write_pom() {
	local file=$1; shift
	{
		cat <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.edgemirror</groupId>
  <artifactId>kafka-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
EOF
		local c g a v
		for c in "$@"; do
			IFS=: read -r g a v <<<"$c"
			printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$g" "$a" "$v"
		done
		cat <<'EOF'
  </dependencies>
</project>
EOF
	} >"$file"
}

# mvn_classpath DIR OUT COORDS... : resolve the runtime classpath into OUT.
# Tries offline first (the jars may already be in ~/.m2), then online.
mvn_classpath() {
	local dir=$1 out=$2; shift 2
	mkdir -p "$dir"
	write_pom "$dir/pom.xml" "$@"
	local args=(-q -B -f "$dir/pom.xml" dependency:build-classpath -DincludeScope=runtime "-Dmdep.outputFile=$out")
	if timeout 300 mvn -o "${args[@]}" >"$dir/mvn-offline.log" 2>&1; then
		return 0
	fi
	log "resolving $* from Maven Central (first run for Kafka $KAFKA_VERSION)"
	timeout 900 mvn -U "${args[@]}" >"$dir/mvn.log" 2>&1 || { tail -n 30 "$dir/mvn.log" >&2; die "maven could not resolve $*"; }
}

# jar_version CPFILE ARTIFACT : version of ARTIFACT-<v>.jar on the classpath.
jar_version() {
	tr ':' '\n' <"$1" | sed -n "s#.*/$2-\([0-9][^/]*\)\.jar\$#\1#p" | head -n 1
}

# cp_valid FILE : the cached classpath exists and every jar is still there.
cp_valid() {
	[[ -s "$1" ]] || return 1
	local j
	while IFS= read -r j; do
		[[ -z "$j" || -f "$j" ]] || return 1
	done < <(tr ':' '\n' <"$1")
}

# broker_classpath : prints the path of the cached broker classpath file,
# resolving it first if needed. Kafka's POMs do not bring an SLF4J binding
# (the tarball adds it), so add the one matching what Maven resolved:
# 4.x: log4j-slf4j-impl (slf4j 1.x) or log4j-slf4j2-impl (slf4j 2.x) at Kafka's
# Log4j2 version; 3.x: slf4j-reload4j at Kafka's slf4j version.
broker_classpath() {
	local f=$CP_DIR/broker.classpath
	if ! cp_valid "$f"; then
		ensure_java_maven
		mkdir -p "$CP_DIR"
		lock 8 "$CP_DIR/.lock" 900
		if ! cp_valid "$f"; then
			local t0; t0=$(now_ms)
			local base=org.apache.kafka:kafka_2.13:$KAFKA_VERSION
			mvn_classpath "$CP_DIR/broker-pass1" "$CP_DIR/broker-pass1.classpath" "$base"
			local slf4j log4j binding
			slf4j=$(jar_version "$CP_DIR/broker-pass1.classpath" slf4j-api)
			[[ -n "$slf4j" ]] || die "no slf4j-api on the Kafka $KAFKA_VERSION classpath"
			if [[ $(kafka_major) -ge 4 ]]; then
				log4j=$(jar_version "$CP_DIR/broker-pass1.classpath" log4j-core)
				[[ -n "$log4j" ]] || log4j=$(jar_version "$CP_DIR/broker-pass1.classpath" log4j-api)
				[[ -n "$log4j" ]] || die "no log4j-core/api on the Kafka $KAFKA_VERSION classpath"
				if [[ $slf4j == 1.* ]]; then
					binding=org.apache.logging.log4j:log4j-slf4j-impl:$log4j
				else
					binding=org.apache.logging.log4j:log4j-slf4j2-impl:$log4j
				fi
			else
				binding=org.slf4j:slf4j-reload4j:$slf4j
			fi
			mvn_classpath "$CP_DIR/broker" "$f.tmp" "$base" "$binding"
			# the binding must not have dragged in a second slf4j-api
			[[ $(tr ':' '\n' <"$f.tmp" | grep -c '/slf4j-api-') -eq 1 ]] || die "two slf4j-api jars on the classpath"
			printf '%s\n' "$slf4j" >"$CP_DIR/slf4j.version"
			[[ -n "${log4j:-}" ]] && printf '%s\n' "$log4j" >"$CP_DIR/log4j2.version"
			printf '%s\n' "$binding" >"$CP_DIR/binding"
			mv "$f.tmp" "$f"
			log "classpath for Kafka $KAFKA_VERSION resolved in $(( ($(now_ms) - t0) / 1000 ))s ($binding)"
		fi
		exec 8>&-
	fi
	printf '%s\n' "$f"
}

# mm2_classpath VERSION : like broker_classpath, for connect-mirror VERSION.
# Connect's POMs bring no logging backend either: add Log4j2 api+core+binding
# at the version Kafka's own kafka-server POM uses (4.x), or slf4j-reload4j (3.x).
mm2_classpath() {
	local v=$1 dir=$WORK/_cp/$1
	local f=$dir/mm2.classpath
	if ! cp_valid "$f"; then
		ensure_java_maven
		mkdir -p "$dir"
		lock 8 "$dir/.lock" 900
		if ! cp_valid "$f"; then
			local t0; t0=$(now_ms)
			local base=org.apache.kafka:connect-mirror:$v
			mvn_classpath "$dir/mm2-pass1" "$dir/mm2-pass1.classpath" "$base"
			local slf4j coords=("$base")
			slf4j=$(jar_version "$dir/mm2-pass1.classpath" slf4j-api)
			[[ -n "$slf4j" ]] || die "no slf4j-api on the connect-mirror $v classpath"
			if [[ ${v%%.*} -ge 4 ]]; then
				local l
				l=$(log4j2_version_of "$v" "$dir")
				if [[ $slf4j == 1.* ]]; then
					coords+=(org.apache.logging.log4j:log4j-slf4j-impl:$l)
				else
					coords+=(org.apache.logging.log4j:log4j-slf4j2-impl:$l)
				fi
				coords+=(org.apache.logging.log4j:log4j-api:$l org.apache.logging.log4j:log4j-core:$l)
			else
				coords+=(org.slf4j:slf4j-reload4j:$slf4j)
			fi
			mvn_classpath "$dir/mm2" "$f.tmp" "${coords[@]}"
			[[ $(tr ':' '\n' <"$f.tmp" | grep -c '/slf4j-api-') -eq 1 ]] || die "two slf4j-api jars on the MM2 classpath"
			mv "$f.tmp" "$f"
			log "MirrorMaker 2 classpath for Kafka $v resolved in $(( ($(now_ms) - t0) / 1000 ))s (${coords[*]:1})"
		fi
		exec 8>&-
	fi
	printf '%s\n' "$f"
}

# log4j2_version_of VERSION DIR : the Log4j2 version Kafka VERSION's broker
# uses, from the broker classpath if cached, else from the kafka-server POM.
log4j2_version_of() {
	local v=$1 dir=$2 l=
	[[ -s "$dir/log4j2.version" ]] && l=$(cat "$dir/log4j2.version")
	if [[ -z "$l" ]]; then
		write_pom "$dir/pom-probe.xml"
		timeout 300 mvn -q -B -f "$dir/pom-probe.xml" dependency:copy "-Dartifact=org.apache.kafka:kafka-server:$v:pom" \
			"-DoutputDirectory=$dir/poms" >"$dir/mvn-pom.log" 2>&1 || { tail -n 20 "$dir/mvn-pom.log" >&2; die "cannot fetch the kafka-server $v POM"; }
		l=$(grep -A1 '<artifactId>log4j-core</artifactId>' "$dir/poms/kafka-server-$v.pom" | sed -n 's#.*<version>\(.*\)</version>.*#\1#p' | head -n 1)
		[[ -n "$l" ]] || die "no log4j-core version in the kafka-server $v POM"
		printf '%s\n' "$l" >"$dir/log4j2.version"
	fi
	printf '%s\n' "$l"
}

# write_log_config DIR [QUIET_CONFIG] : logging config for the selected
# version, console output (the caller redirects it to a file). QUIET_CONFIG=1
# (the broker) hides the "XConfig values:" dumps; MM2 keeps them, since they
# are the only way to see which client settings reached which client.
# Echoes the JVM flag to use.
write_log_config() {
	local dir=$1 quiet=${2:-0} level=${KAFKA_LOG_LEVEL:-INFO} cfglevel=INFO
	[[ $quiet == 1 ]] && cfglevel=WARN
	if [[ $(kafka_major) -ge 4 ]]; then
		cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $level
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = $cfglevel
EOF
		printf '%s\n' "-Dlog4j2.configurationFile=$dir/log4j2.properties"
	else
		cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=$level, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.reflections=ERROR
log4j.logger.org.apache.kafka.common.config.AbstractConfig=$cfglevel
EOF
		printf '%s\n' "-Dlog4j.configuration=file:$dir/log4j.properties"
	fi
}

# pid_alive PIDFILE MARKER : the pid in PIDFILE runs a JVM whose command line
# contains MARKER (so a recycled pid is never mistaken for ours).
pid_alive() {
	local pidfile=$1 marker=$2 pid
	[[ -s "$pidfile" ]] || return 1
	pid=$(cat "$pidfile")
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$marker"
}

# started_alive PID : the process we just started in the background has not
# exited. Used while waiting for start-up instead of pid_alive: until the
# shell's fork has exec'd setsid, nohup and java, its command line is still
# the script's, without the marker, and pid_alive would report a JVM that is
# starting fine as dead (and leave it running, unrecorded).
started_alive() { ! proc_gone "$1"; }

# proc_gone PID : the process has exited and released its files (its /proc
# entry is gone, or it is a zombie). /proc/PID/cmdline empties earlier, while
# the kernel may still be closing the JVM's sockets.
proc_gone() {
	[[ ! -e /proc/$1 ]] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# stop_pid PIDFILE MARKER GRACE_S : SIGTERM, then SIGKILL after GRACE_S
# (GRACE_S=0: SIGKILL at once). Waits, bounded, until the process is gone.
stop_pid() {
	local pidfile=$1 marker=$2 grace=$3 pid i
	if ! pid_alive "$pidfile" "$marker"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(cat "$pidfile")
	if [[ $grace -gt 0 ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			pid_alive "$pidfile" "$marker" || break
			sleep 0.1
		done
	fi
	if pid_alive "$pidfile" "$marker"; then
		[[ $grace -gt 0 ]] && log "pid $pid still alive after ${grace}s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_alive "$pidfile" "$marker" || break
			sleep 0.1
		done
	fi
	pid_alive "$pidfile" "$marker" && die "pid $pid did not exit"
	for ((i = 0; i < 100; i++)); do
		proc_gone "$pid" && break
		sleep 0.1
	done
	rm -f "$pidfile"
}

# jvm_opts_common : flags shared by broker and MM2 (heap is separate).
jvm_opts_common() {
	printf '%s\n' -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
		-XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
}
