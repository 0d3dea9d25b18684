#!/bin/sh
# Waits until the service answers, for at most a minute.
set -eu
for attempt in $(seq 1 30); do
  if curl -fsS -o /dev/null "$HOST"; then
    echo "service at $HOST answers (attempt $attempt)"
    exit 0
  fi
  sleep 2
done
echo "service at $HOST did not answer" >&2
exit 1
