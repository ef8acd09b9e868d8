#!/bin/bash
# Runs a Kafka main class with the environment apache/kafka's scripts read:
# KAFKA_HEAP_OPTS, KAFKA_LOG4J_OPTS, KAFKA_OPTS and LOG_DIR.
set -eu
class="$1"; shift
# shellcheck disable=SC2086  # the *_OPTS variables are lists of JVM options
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
  ${KAFKA_LOG4J_OPTS:-} ${KAFKA_OPTS:-} "-Dkafka.logs.dir=${LOG_DIR:-/tmp}" \
  -cp '/opt/kafka/libs/*' "$class" "$@"
