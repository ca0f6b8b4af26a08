# Helpers shared by the bench scripts: build, start and stop servers on
# 127.0.0.1, clean up on exit. Source it; it sets a trap on EXIT.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chat-bench.XXXXXX")
started=() # every server PID this script started
running=() # the servers started since the last stop_all

cleanup() {
	local pid
	for pid in "${started[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${started[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$*" >&2; }

# ensure_nats installs nats-server from Debian if it is missing.
ensure_nats() {
	command -v nats-server >/dev/null && return
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing nats-server"
	$sudo apt-get install -y -qq nats-server >&2 ||
		{ $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq nats-server >&2; }
}

# build puts chat-server and chat-bench into $tmp.
build() {
	log "building chat-server and chat-bench"
	(cd "$root" && go build -o "$tmp/chat-server" ./cmd/chat-server && go build -o "$tmp/chat-bench" ./cmd/chat-bench)
}

# build_nats_js puts a nats-server with JetStream, the version go.mod
# names, into $tmp, for cluster mode (Debian's is too old for it), with a
# max_payload that carries the default line cap.
build_nats_js() {
	log "building nats-server for cluster mode"
	(cd "$root" && go build -o "$tmp/nats-server-js" github.com/nats-io/nats-server/v2)
	printf 'max_payload: 4MB\n' >"$tmp/nats.conf"
}

# port_free reports whether nothing listens on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server TARGET LOGFILE [FLAGS...] starts chat-server or nats-server
# on a free port of 127.0.0.1 and waits until it accepts; it sets
# server_pid and server_port. Call it in this shell, not in $(...), so
# that $! is the server itself. chat-server runs without flood control
# (--rate 0): the bench sends far faster than any client may.
start_server() {
	local target=$1 logfile=$2
	shift 2
	# Pick below the kernel's ephemeral range, whose ports the bench's
	# own client sockets (and their TIME_WAITs) hold.
	local port tries ephemeral
	ephemeral=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	for tries in $(seq 50); do
		port=$((10000 + RANDOM % (ephemeral - 10000)))
		port_free "$port" && break
	done
	case $target in
	chat) "$tmp/chat-server" -a 127.0.0.1 -p "$port" --rate 0 "$@" >"$logfile" 2>&1 & ;;
	nats) nats-server -a 127.0.0.1 -p "$port" "$@" >"$logfile" 2>&1 & ;;
	natsjs) "$tmp/nats-server-js" -a 127.0.0.1 -p "$port" -js -sd "$tmp/js-$port" -c "$tmp/nats.conf" "$@" >"$logfile" 2>&1 & ;;
	floor) "$tmp/floor-relay" -addr "127.0.0.1:$port" "$@" >"$logfile" 2>&1 & ;;
	*) log "unknown target $target"; return 1 ;;
	esac
	server_pid=$! server_port=$port
	started+=("$server_pid")
	running+=("$server_pid")
	for tries in $(seq 100); do
		kill -0 "$server_pid" 2>/dev/null || { log "$target exited; log:"; cat "$logfile" >&2; return 1; }
		port_free "$port" || return 0
		sleep 0.1
	done
	log "$target did not listen on 127.0.0.1:$port within 10s"
	return 1
}

# stop_server stops the server started last, by its PID, and waits for it
# (SIGKILL after 10 s).
stop_server() {
	local i
	kill "$server_pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
}

# stop_all stops every server started since the last stop_all, the last
# first (chat servers before the NATS they use).
stop_all() {
	local i
	for ((i = ${#running[@]} - 1; i >= 0; i--)); do
		server_pid=${running[i]}
		stop_server
	done
	running=()
}

# bench ARGS... runs chat-bench against the server started last, bounded
# by its own --timeout and, as a backstop, by timeout(1).
bench() {
	timeout --kill-after=5 "$((run_timeout + 30))" \
		"$tmp/chat-bench" "$@" --addr "127.0.0.1:$server_port" --pid "$server_pid" --timeout "${run_timeout}s"
}

# field FILE NAME prints a number field of a one-line JSON result.
field() { grep -o "\"$2\":[-0-9.e+]*" "$1" | cut -d: -f2 || true; }

# medians KEY FILE... sets med[KEY.F] (med: the caller's associative
# array) to the median of F over the JSON results FILE..., for each F of
# msgs_per_sec, latency_p99_us and server_cpu_us_per_msg, and passed to how
# many of them passed their checks.
medians() {
	local key=$1 f j
	shift
	for f in msgs_per_sec latency_p99_us server_cpu_us_per_msg; do
		med[$key.$f]=$(for j in "$@"; do field "$j" "$f"; done | median)
	done
	passed=$(grep -l '"ok":true' "$@" | wc -l)
}

# median prints the median of the numbers on stdin ("-" for none).
median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "-"; exit }
		print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
