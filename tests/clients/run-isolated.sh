#!/bin/sh
# Runs a command in a private network namespace whose only interface is
# loopback (root + unshare needed), so that no client under test can reach
# anything but 127.0.0.1 whatever it tries. Without the privilege the command
# runs as it is (the tests still point every proxy variable at a local refuser).
if [ "${MCP_CLIENTS_NETNS:-}" != 1 ] && unshare -n true 2>/dev/null; then
  exec unshare -n -- sh -c 'PATH="$PATH:/usr/sbin:/sbin" ip link set lo up && MCP_CLIENTS_NETNS=1 exec "$@"' sh "$@"
fi
exec "$@"
