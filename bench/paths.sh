#!/usr/bin/env bash
# paths.sh runs the same pairs load along each path a message can take, in
# one run, alternately (floor, single, cluster-same, cluster-cross, then
# again), each on freshly started servers on 127.0.0.1, and prints the
# medians of msgs/s, p99 latency and the CPU per message of all the server
# processes of the path, with ratios to the single server (and of the
# single server to the floor):
#
#   floor          a minimal relay of this protocol (no checks, no limits):
#                  the least work this machine can do per message
#   single         one chat-server (event loops)
#   cluster-same   one chat-server in cluster mode, NATS beside it; senders
#                  and receivers on it (no message touches NATS)
#   cluster-cross  two chat-servers and NATS; senders on one, receivers on
#                  the other: every message crosses NATS
#
# Usage: bench/paths.sh. Knobs, as environment variables:
#   ROUNDS=3 N=8 SIZE=64 WINDOW=64 RUN_TIMEOUT=60
#   M_FLOOR=400000 M_SINGLE=400000 M_SAME=300000 M_CROSS=100000  messages per sender
#   PATHS="floor single cluster-same cluster-cross"              which rows
#   FLOOR_DIR=../shared/floor   the floor relay's source (its row is left
#                               out when it is not there)
#   KEEP=dir            copy every run's JSON result and server logs there
source "$(dirname "$0")/lib.sh"

rounds=${ROUNDS:-3} n=${N:-8}
size=${SIZE:-64} window=${WINDOW:-64} run_timeout=${RUN_TIMEOUT:-60}
read -r -a paths <<<"${PATHS:-floor single cluster-same cluster-cross}"
declare -A messages=([floor]=${M_FLOOR:-400000} [single]=${M_SINGLE:-400000}
	[cluster-same]=${M_SAME:-300000} [cluster-cross]=${M_CROSS:-100000})
floor_dir=${FLOOR_DIR:-$root/../shared/floor}

build
build_nats_js
if [[ " ${paths[*]} " == *" floor "* ]]; then
	if [ -f "$floor_dir/main.go" ]; then
		go build -C "$floor_dir" -o "$tmp/floor-relay" .
	else
		log "no floor relay in $floor_dir: its row is left out"
		read -r -a paths <<<"${paths[*]/floor/}"
	fi
fi
mkdir -p "$tmp/runs"

# start_path PATH RUN starts the servers of a path; it sets addr,
# recv_addr (empty: the same) and pids (comma-separated).
start_path() {
	local path=$1 run=$2 nats_url
	recv_addr=
	case $path in
	floor)
		start_server floor "$run.floor.log"
		addr=127.0.0.1:$server_port pids=$server_pid ;;
	single)
		start_server chat "$run.chat.log"
		addr=127.0.0.1:$server_port pids=$server_pid ;;
	cluster-same | cluster-cross)
		start_server natsjs "$run.nats.log"
		nats_url=nats://127.0.0.1:$server_port pids=$server_pid
		start_server chat "$run.chat1.log" --nats-url "$nats_url"
		addr=127.0.0.1:$server_port pids=$pids,$server_pid
		if [ "$path" = cluster-cross ]; then
			start_server chat "$run.chat2.log" --nats-url "$nats_url"
			recv_addr=127.0.0.1:$server_port pids=$pids,$server_pid
		fi ;;
	esac
}

failed=0
for round in $(seq "$rounds"); do
	for path in "${paths[@]}"; do
		run="$tmp/runs/$path-$round"
		start_path "$path" "$run"
		args=(pairs -n "$n" -m "${messages[$path]}" --size "$size" --window "$window" --json
			--addr "$addr" --pid "$pids" --timeout "${run_timeout}s")
		[ -n "$recv_addr" ] && args+=(--recv-addr "$recv_addr")
		timeout --kill-after=5 "$((run_timeout + 30))" "$tmp/chat-bench" "${args[@]}" >"$run.json" || {
			failed=$((failed + 1))
			log "round $round $path: FAILED: $(cat "$run.json")"
		}
		stop_all
		log "round $round $path: $(field "$run.json" msgs_per_sec | cut -d. -f1) msgs/s, p99 $(field "$run.json" latency_p99_us) µs, servers $(field "$run.json" server_cpu_us_per_msg) µs CPU/msg"
	done
done

declare -A med=()
printf '\n%-14s %12s %10s %18s %8s\n' path msgs/s p99_us server_cpu_us/msg ok_runs
for path in "${paths[@]}"; do
	medians "$path" "$tmp/runs/$path-"*.json
	printf '%-14s %12.0f %10.0f %18.2f %8s\n' "$path" "${med[$path.msgs_per_sec]}" \
		"${med[$path.latency_p99_us]}" "${med[$path.server_cpu_us_per_msg]}" "$passed/$rounds"
done
echo
printf '%-28s %10s %14s\n' ratio msgs/s cpu_per_msg
ratio() { # ratio A B: the msgs/s and CPU per message of A over B's
	[ -n "${med[$1.msgs_per_sec]:-}" ] && [ -n "${med[$2.msgs_per_sec]:-}" ] || return 0
	awk -v l="$1 / $2" -v a="${med[$1.msgs_per_sec]}" -v b="${med[$2.msgs_per_sec]}" \
		-v c="${med[$1.server_cpu_us_per_msg]}" -v d="${med[$2.server_cpu_us_per_msg]}" \
		'BEGIN { printf "%-28s %10.2f %14.2f\n", l, a / b, c / d }'
}
ratio single floor
ratio cluster-same single
ratio cluster-cross single
echo "(pairs -n $n, --size $size --window $window; messages per sender: floor ${messages[floor]}, single ${messages[single]}, cluster-same ${messages[cluster-same]}, cluster-cross ${messages[cluster-cross]}; $rounds rounds, alternating; medians; CPU is every server process of the path)"

if [ -n "${KEEP:-}" ]; then
	mkdir -p "$KEEP"
	cp "$tmp"/runs/* "$KEEP"/
	log "kept every run's result and logs in $KEEP"
fi
exit "$failed"
