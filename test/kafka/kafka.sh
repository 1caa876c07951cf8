#!/usr/bin/env bash
# kafka.sh: run real single-node Apache Kafka (KRaft, combined broker+controller)
# clusters from Maven Central jars, for edgemirror's real-Kafka tests.
#
# Usage:
#   kafka.sh up NAME PORT [--sasl-ssl]   start (or find running) cluster NAME; last stdout line: 127.0.0.1:PORT
#   kafka.sh down NAME                   SIGTERM, SIGKILL after KAFKA_STOP_TIMEOUT (20 s)
#   kafka.sh kill NAME                   SIGKILL now (fault tests)
#   kafka.sh restart NAME                down (if running) + up with the same config and data
#   kafka.sh status NAME                 "running ADDR pid N" (exit 0) | "stopped" (exit 3) | "absent" (exit 4)
#   kafka.sh clean NAME                  down + delete NAME's data
#   kafka.sh fetch                       download the jars for KAFKA_VERSION, build the readiness probe
#
# Environment:
#   KAFKA_VERSION          default 4.4.0 (3.9.x works too)
#   KAFKA_WORK             work dir, default .work beside this script; NAME lives in $KAFKA_WORK/NAME
#   KAFKA_HEAP_OPTS        default "-Xms256m -Xmx512m"
#   KAFKA_JVM_OPTS         extra JVM flags
#   KAFKA_EXTRA_PROPS      extra broker properties, "k=v" separated by newlines (or by spaces if there is no newline)
#   ADVERTISED_HOST_PORT   advertise this host:port instead of 127.0.0.1:PORT (e.g. a WAN proxy in front)
#   CONTROLLER_PORT        controller listener port, default PORT+1
#   KAFKA_SECURITY         plaintext (default) | sasl_ssl (same as --sasl-ssl)
#   KAFKA_SASL_USER / KAFKA_SASL_PASSWORD  client credentials for sasl_ssl (default edgemirror / random)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness, default 90
#   KAFKA_LOG_LEVEL        root log level, default INFO
#
# With sasl_ssl, NAME's dir holds tls/ca.pem (the CA clients must trust) and
# sasl.env (KAFKA_SASL_USER, KAFKA_SASL_PASSWORD, KAFKA_CA_PEM, mechanisms).
set -euo pipefail
SELF=kafka.sh
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

marker() { printf '%s\n' "-Dedgemirror.kafka.dir=$1"; }

# kready builds once into the work dir; go build's cache makes rebuilds cheap.
KREADY=$WORK/bin/kready
build_kready() {
	local src=$LIB_DIR/kready/main.go
	if [[ -x "$KREADY" && "$KREADY" -nt "$src" ]]; then return 0; fi
	command -v go >/dev/null || die "go is needed to build the readiness probe ($src)"
	mkdir -p "$WORK/bin"
	lock 7 "$WORK/bin/.lock" 300
	if ! [[ -x "$KREADY" && "$KREADY" -nt "$src" ]]; then
		(cd "$LIB_DIR/kready" && timeout 300 go build -o "$KREADY.tmp" .) || die "building kready failed"
		mv "$KREADY.tmp" "$KREADY"
	fi
	exec 7>&-
}

# probe DIR TIMEOUT: one bounded readiness check (metadata lists a broker).
probe() {
	local dir=$1 t=${2:-2s} args=()
	if [[ -f "$dir/sasl.env" ]]; then
		# shellcheck disable=SC1091
		args=(-ca "$dir/tls/ca.pem" -user "$(. "$dir/sasl.env"; echo "$KAFKA_ADMIN_USER")" \
			-pass "$(. "$dir/sasl.env"; echo "$KAFKA_ADMIN_PASSWORD")")
	fi
	"$KREADY" -addr "127.0.0.1:$(cat "$dir/port")" -timeout "$t" "${args[@]}"
}

randstr() { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c "${1:-20}"; }

# A KRaft cluster id: 16 random bytes, base64url without padding (Uuid.toString).
# Like Kafka's Uuid.randomUuid, never one starting with "-": StorageTool's
# argument parser would take "-t -xyz..." for an option and refuse to format
# (seen once in 64 starts on average).
cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		[[ $id == -* ]] || break
	done
	printf '%s\n' "$id"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# gen_tls DIR: self-signed CA + broker certificate for 127.0.0.1/localhost
# (and the advertised host, if any), with keytool only.
gen_tls() {
	local d=$1/tls pw san=ip:127.0.0.1,dns:localhost
	[[ -f "$d/broker.p12" && -f "$d/ca.pem" ]] && return 0
	rm -rf "$d"; mkdir -p "$d"
	pw=$(randstr 24)
	if [[ -n "${ADVERTISED_HOST_PORT:-}" ]]; then
		local h=${ADVERTISED_HOST_PORT%:*}
		if [[ $h =~ ^[0-9.]+$ ]]; then san+=",ip:$h"; elif [[ $h != localhost ]]; then san+=",dns:$h"; fi
	fi
	local kt=(keytool -noprompt -storetype PKCS12 -storepass "$pw")
	(
		cd "$d"
		"${kt[@]}" -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=edgemirror test CA" \
			-ext bc:c -keystore ca.p12
		"${kt[@]}" -exportcert -rfc -alias ca -keystore ca.p12 -file ca.pem
		"${kt[@]}" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=localhost" \
			-keystore broker.p12
		"${kt[@]}" -certreq -alias broker -keystore broker.p12 -file broker.csr
		"${kt[@]}" -gencert -alias ca -keystore ca.p12 -infile broker.csr -outfile broker.pem -rfc -validity 3650 \
			-ext "SAN=$san" -ext KU=digitalSignature,keyEncipherment -ext EKU=serverAuth,clientAuth
		"${kt[@]}" -importcert -alias ca -file ca.pem -keystore broker.p12
		"${kt[@]}" -importcert -alias broker -file broker.pem -keystore broker.p12
		"${kt[@]}" -importcert -alias ca -file ca.pem -keystore truststore.p12
	) >"$1/logs/keytool.log" 2>&1 || { cat "$1/logs/keytool.log" >&2; die "certificate generation failed"; }
	printf '%s\n' "$pw" >"$d/password"
}

# write_config DIR PORT SECURITY: server.properties for NAME (regenerated on
# every "up", kept as-is by "restart").
write_config() {
	local dir=$1 port=$2 sec=$3
	local cport=${CONTROLLER_PORT:-$((port + 1))}
	local lname=PLAINTEXT
	[[ $sec == sasl_ssl ]] && lname=SASL_SSL
	local adv=${ADVERTISED_HOST_PORT:-127.0.0.1:$port}
	{
		cat <<EOF
# generated by kafka.sh for $(basename "$dir"), Kafka $KAFKA_VERSION
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$lname://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$lname://$adv
controller.listener.names=CONTROLLER
inter.broker.listener.name=$lname
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$lname:$lname
log.dirs=$dir/data
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
log.segment.bytes=16777216
log.retention.check.interval.ms=30000
# after a SIGKILL the new incarnation waits for the old registration to expire (default 9 s)
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
EOF
		if [[ $(kafka_major) -ge 4 ]]; then
			cat <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
		fi
		if [[ $sec == sasl_ssl ]]; then
			local pw; pw=$(cat "$dir/tls/password")
			# shellcheck disable=SC1091
			. "$dir/sasl.env"
			cat <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASSWORD" user_$KAFKA_ADMIN_USER="$KAFKA_ADMIN_PASSWORD" user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$KAFKA_ADMIN_PASSWORD";
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=$pw
ssl.key.password=$pw
ssl.truststore.type=PKCS12
ssl.truststore.location=$dir/tls/truststore.p12
ssl.truststore.password=$pw
ssl.client.auth=none
EOF
		fi
		if [[ -n "${KAFKA_EXTRA_PROPS:-}" ]]; then
			echo "# KAFKA_EXTRA_PROPS"
			if [[ $KAFKA_EXTRA_PROPS == *$'\n'* ]]; then
				printf '%s\n' "$KAFKA_EXTRA_PROPS" | sed -e 's/^[[:space:]]*//' -e '/^$/d'
			else
				# shellcheck disable=SC2086
				printf '%s\n' $KAFKA_EXTRA_PROPS
			fi
		fi
	} >"$dir/server.properties"
	printf '%s\n' "$port" >"$dir/port"
	printf '%s\n' "$adv" >"$dir/addr"
	printf '%s\n' "$sec" >"$dir/security"
	printf '%s\n' "$KAFKA_VERSION" >"$dir/version"
}

# start_broker DIR: format storage if new, launch the JVM detached, wait for
# readiness (bounded), print the address last.
start_broker() {
	local dir=$1 t0 cpf cp port
	t0=$(now_ms)
	port=$(cat "$dir/port")
	local i
	for ((i = 0; i < 50; i++)); do
		port_in_use "$port" || break
		sleep 0.1
	done
	if port_in_use "$port"; then die "127.0.0.1:$port is already in use by another process"; fi
	ensure_java_maven
	cpf=$(broker_classpath)
	cp=$(cat "$cpf")
	build_kready
	local heap=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m})
	local extra=(${KAFKA_JVM_OPTS:-})
	local logflag; logflag=$(write_log_config "$dir" 1)
	mapfile -t common < <(jvm_opts_common)
	local java=(java "${heap[@]}" "${common[@]}" "${extra[@]}" "$logflag" "-Dkafka.logs.dir=$dir/logs" "$(marker "$dir")" -cp "$cp")

	if [[ ! -f "$dir/data/meta.properties" ]]; then
		local fmt=(kafka.tools.StorageTool format -t "$(cluster_id)" -c "$dir/server.properties")
		if [[ $(cat "$dir/security") == sasl_ssl ]]; then
			# shellcheck disable=SC1091
			. "$dir/sasl.env"
			fmt+=(--add-scram "SCRAM-SHA-512=[name=$KAFKA_ADMIN_USER,password=$KAFKA_ADMIN_PASSWORD]"
				--add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]")
		fi
		timeout 120 java -Xmx256m "$logflag" -cp "$cp" "${fmt[@]}" >"$dir/logs/format.log" 2>&1 ||
			{ cat "$dir/logs/format.log" >&2; die "formatting $dir/data failed"; }
	fi

	[[ -f "$dir/logs/kafka.out" ]] && mv -f "$dir/logs/kafka.out" "$dir/logs/kafka.out.1"
	# setsid + nohup: the JVM outlives the caller and its terminal; it gets no
	# inherited pipes (a caller reading our stdout would otherwise hang) and no lock fds.
	setsid nohup "${java[@]}" kafka.Kafka "$dir/server.properties" \
		</dev/null >"$dir/logs/kafka.out" 2>&1 9>&- 8>&- 7>&- &
	local pid=$!
	printf '%s\n' "$pid" >"$dir/kafka.pid"

	local deadline=$(($(date +%s) + ${KAFKA_START_TIMEOUT:-90}))
	while :; do
		if ! started_alive "$pid"; then
			tail -n 40 "$dir/logs/kafka.out" >&2
			rm -f "$dir/kafka.pid"
			die "Kafka $(basename "$dir") exited during start-up (log: $dir/logs/kafka.out)"
		fi
		if probe "$dir" 2s >/dev/null 2>&1; then break; fi
		if [[ $(date +%s) -ge $deadline ]]; then
			tail -n 40 "$dir/logs/kafka.out" >&2
			stop_pid "$dir/kafka.pid" "$(marker "$dir")" 5
			die "Kafka $(basename "$dir") not ready after ${KAFKA_START_TIMEOUT:-90}s (log: $dir/logs/kafka.out)"
		fi
		sleep 0.2
	done
	local ms=$(($(now_ms) - t0))
	printf '%s\n' "$ms" >"$dir/startup.ms"
	log "$(basename "$dir") (Kafka $KAFKA_VERSION, $(cat "$dir/security")) ready in ${ms} ms, pid $pid"
	if [[ -f "$dir/sasl.env" ]]; then
		# shellcheck disable=SC1091
		(. "$dir/sasl.env"; log "SASL user $KAFKA_SASL_USER password $KAFKA_SASL_PASSWORD, CA $KAFKA_CA_PEM (see $dir/sasl.env)")
	fi
	cat "$dir/addr"
}

cmd_up() {
	[[ $# -ge 2 ]] || usage
	local name=$1 port=$2; shift 2
	check_name "$name"
	[[ "$port" =~ ^[0-9]+$ && $port -gt 0 && $port -lt 65535 ]] || die "bad port '$port'"
	local sec=${KAFKA_SECURITY:-plaintext}
	while [[ $# -gt 0 ]]; do
		case $1 in
		--sasl-ssl) sec=sasl_ssl ;;
		*) die "unknown option $1" ;;
		esac
		shift
	done
	sec=${sec,,}
	[[ $sec == plaintext || $sec == sasl_ssl ]] || die "KAFKA_SECURITY must be plaintext or sasl_ssl"
	local dir=$WORK/$name
	mkdir -p "$dir/logs"
	lock 9 "$dir/.lock" 180
	if pid_alive "$dir/kafka.pid" "$(marker "$dir")"; then
		build_kready
		if probe "$dir" 5s >/dev/null 2>&1; then
			[[ $(cat "$dir/port") == "$port" ]] || log "$name already runs on port $(cat "$dir/port"), not $port"
			log "$name already running (pid $(cat "$dir/kafka.pid"))"
			cat "$dir/addr"
			return 0
		fi
		die "$name runs (pid $(cat "$dir/kafka.pid")) but does not answer; try: kafka.sh restart $name"
	fi
	if [[ -f "$dir/data/meta.properties" ]]; then
		[[ $(cat "$dir/security" 2>/dev/null) == "$sec" ]] ||
			die "$name has data made with security $(cat "$dir/security" 2>/dev/null); run: kafka.sh clean $name"
		[[ $(cat "$dir/version" 2>/dev/null) == "$KAFKA_VERSION" ]] ||
			log "warning: $name's data was written by Kafka $(cat "$dir/version" 2>/dev/null), starting $KAFKA_VERSION"
	fi
	if [[ $sec == sasl_ssl ]]; then
		ensure_java_maven
		gen_tls "$dir"
		if [[ ! -f "$dir/sasl.env" ]]; then
			cat >"$dir/sasl.env" <<EOF
KAFKA_SASL_USER=${KAFKA_SASL_USER:-edgemirror}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-$(randstr 20)}
KAFKA_SASL_MECHANISMS=SCRAM-SHA-512,PLAIN
KAFKA_CA_PEM=$dir/tls/ca.pem
KAFKA_ADMIN_USER=admin
KAFKA_ADMIN_PASSWORD=$(randstr 20)
EOF
		fi
	else
		rm -f "$dir/sasl.env"
	fi
	write_config "$dir" "$port" "$sec"
	start_broker "$dir"
}

existing_dir() {
	check_name "$1"
	local dir=$WORK/$1
	[[ -f "$dir/server.properties" ]] || die "no cluster named $1 under $WORK"
	printf '%s\n' "$dir"
}

cmd_down() {
	[[ $# -eq 1 ]] || usage
	local dir; dir=$(existing_dir "$1")
	lock 9 "$dir/.lock" 180
	stop_pid "$dir/kafka.pid" "$(marker "$dir")" "${KAFKA_STOP_TIMEOUT:-20}"
	log "$1 stopped"
}

cmd_kill() {
	[[ $# -eq 1 ]] || usage
	local dir; dir=$(existing_dir "$1")
	lock 9 "$dir/.lock" 180
	stop_pid "$dir/kafka.pid" "$(marker "$dir")" 0
	log "$1 killed"
}

cmd_restart() {
	[[ $# -eq 1 ]] || usage
	local dir; dir=$(existing_dir "$1")
	lock 9 "$dir/.lock" 180
	stop_pid "$dir/kafka.pid" "$(marker "$dir")" "${KAFKA_STOP_TIMEOUT:-20}"
	# a restart keeps the version the data was written with
	KAFKA_VERSION=$(cat "$dir/version")
	CP_DIR=$WORK/_cp/$KAFKA_VERSION
	start_broker "$dir"
}

cmd_status() {
	[[ $# -eq 1 ]] || usage
	check_name "$1"
	local dir=$WORK/$1
	if [[ ! -f "$dir/server.properties" ]]; then echo absent; exit 4; fi
	if pid_alive "$dir/kafka.pid" "$(marker "$dir")"; then
		build_kready
		local ready=ready
		probe "$dir" 3s >/dev/null 2>&1 || ready=not-ready
		echo "running $(cat "$dir/addr") pid $(cat "$dir/kafka.pid") $ready Kafka $(cat "$dir/version") $(cat "$dir/security")"
		return 0
	fi
	echo stopped
	exit 3
}

cmd_clean() {
	[[ $# -eq 1 ]] || usage
	check_name "$1"
	local dir=$WORK/$1
	[[ -d "$dir" ]] || return 0
	(
		lock 9 "$dir/.lock" 180
		stop_pid "$dir/kafka.pid" "$(marker "$dir")" "${KAFKA_STOP_TIMEOUT:-20}"
	)
	rm -rf "$dir"
	log "$1 removed"
}

cmd_fetch() {
	local t0; t0=$(now_ms)
	local f; f=$(broker_classpath)
	build_kready
	log "Kafka $KAFKA_VERSION: $(tr ':' '\n' <"$f" | wc -l) jars, $(tr ':' '\n' <"$f" | xargs du -cb | tail -n 1 | cut -f1) bytes, ready in $(($(now_ms) - t0)) ms"
}

[[ $# -ge 1 ]] || usage
cmd=$1; shift
case $cmd in
up) cmd_up "$@" ;;
down | stop) cmd_down "$@" ;;
kill) cmd_kill "$@" ;;
restart) cmd_restart "$@" ;;
status) cmd_status "$@" ;;
clean) cmd_clean "$@" ;;
fetch) cmd_fetch "$@" ;;
-h | --help | help) usage ;;
*) log "unknown command $cmd"; usage ;;
esac
