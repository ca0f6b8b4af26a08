#!/usr/bin/env bash
# conns.sh opens many idle logged-in users on a fresh chat-server (and, for
# scale, subscribed connections on a fresh nats-server), on 127.0.0.1, and
# prints the server's RSS per connection; LIST and SEND must still be
# answered with all of them open.
#
# Usage: bench/conns.sh. Knobs: CONNS=10000, SRC_ADDRS=1 (127.0.0.x source
# addresses; raise it past ~28k connections), RUN_TIMEOUT=120 (seconds).
source "$(dirname "$0")/lib.sh"

conns=${CONNS:-10000} src_addrs=${SRC_ADDRS:-1} run_timeout=${RUN_TIMEOUT:-120}
limit=$((conns * 2))

ulimit -n "$(ulimit -Hn)" # for the servers; chat-bench raises its own
ensure_nats
build

failed=0
for target in chat nats; do
	flags=()
	[ "$target" = chat ] && flags=(--max-users "$limit" --max-conns "$limit")
	start_server "$target" "$tmp/$target.log" "${flags[@]}"
	echo "== $target (${flags[*]:-default limits})"
	bench conns --target "$target" -n "$conns" --src-addrs "$src_addrs" || failed=1
	stop_server
done
exit "$failed"
