#!/usr/bin/env bash
# compare.sh runs the same load against chat-server and nats-server on
# 127.0.0.1, alternately (chat, nats, chat, nats, ...), each run on a
# freshly started server, and prints the medians of msgs/s, p99 latency
# and server CPU per message for each, with the ratio chat/nats.
#
# Usage: bench/compare.sh   (from anywhere; needs go, and root or sudo to
# install nats-server if it is missing). Knobs, as environment variables:
#   ROUNDS=3            rounds; each runs chat then nats once per shape
#   PAIRS_N=8 PAIRS_M=400000    pairs: senders, messages per sender
#   FANIN_N=15 FANIN_M=250000   fanin: senders, messages per sender
#   SIZE=64 WINDOW=64   payload bytes, messages in flight per sender
#   RUN_TIMEOUT=60      seconds each chat-bench run may take
#   KEEP=dir            copy every run's JSON result and server log there
#   CHAT_FLAGS="..."    extra chat-server flags, e.g. "--event-loops 2"
source "$(dirname "$0")/lib.sh"

rounds=${ROUNDS:-3}
size=${SIZE:-64} window=${WINDOW:-64} run_timeout=${RUN_TIMEOUT:-60}
shapes=("pairs ${PAIRS_N:-8} ${PAIRS_M:-400000}" "fanin ${FANIN_N:-15} ${FANIN_M:-250000}")

ensure_nats
build
mkdir -p "$tmp/runs"

failed=0
for round in $(seq "$rounds"); do
	for s in "${shapes[@]}"; do
		read -r shape n m <<<"$s"
		for target in chat nats; do
			run="$tmp/runs/$shape-$target-$round"
			if [ "$target" = chat ]; then
				# shellcheck disable=SC2086 # CHAT_FLAGS is a list of flags
				start_server chat "$run.log" ${CHAT_FLAGS:-}
			else
				start_server nats "$run.log"
			fi
			bench "$shape" --target "$target" -n "$n" -m "$m" --size "$size" --window "$window" --json >"$run.json" || {
				failed=$((failed + 1))
				log "round $round $shape $target: FAILED: $(cat "$run.json")"
			}
			stop_server
			slow=$(grep -ci 'slow.consumer' "$run.log" || true)
			log "round $round $shape $target: $(field "$run.json" msgs_per_sec | cut -d. -f1) msgs/s, p99 $(field "$run.json" latency_p99_us) µs, server $(field "$run.json" server_cpu_us_per_msg) µs CPU/msg, slow-consumer log lines: $slow"
		done
	done
done

printf '\n%-6s %-10s %12s %10s %18s %8s\n' shape target msgs/s p99_us server_cpu_us/msg ok_runs
for s in "${shapes[@]}"; do
	read -r shape n m <<<"$s"
	declare -A med=()
	for target in chat nats; do
		medians "$target" "$tmp/runs/$shape-$target-"*.json
		printf '%-6s %-10s %12.0f %10.0f %18.2f %8s\n' "$shape" "$target" \
			"${med[$target.msgs_per_sec]}" "${med[$target.latency_p99_us]}" "${med[$target.server_cpu_us_per_msg]}" "$passed/$rounds"
	done
	awk -v s="$shape" -v a="${med[chat.msgs_per_sec]}" -v b="${med[nats.msgs_per_sec]}" \
		-v c="${med[chat.latency_p99_us]}" -v d="${med[nats.latency_p99_us]}" \
		-v e="${med[chat.server_cpu_us_per_msg]}" -v f="${med[nats.server_cpu_us_per_msg]}" \
		'BEGIN { printf "%-6s %-10s %12.2f %10.2f %18.2f\n", s, "chat/nats", a / b, c / d, e / f }'
	unset med
done
echo "(shapes: pairs -n ${PAIRS_N:-8} -m ${PAIRS_M:-400000}, fanin -n ${FANIN_N:-15} -m ${FANIN_M:-250000}; --size $size --window $window; $rounds rounds; medians)"

if [ -n "${KEEP:-}" ]; then
	mkdir -p "$KEEP" && cp "$tmp"/runs/* "$KEEP"/
fi
[ "$failed" -eq 0 ] || { log "$failed run(s) failed their checks"; exit 1; }
