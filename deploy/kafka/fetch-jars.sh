#!/usr/bin/env bash
# Resolves Apache Kafka's broker jars (see pom.xml) from Maven Central into a cache outside the
# repo: $WXSUB_KAFKA_HOME/libs, default ~/.cache/wxsub/kafka-<version>/libs. Idempotent: a stamp
# holding the pom's checksum skips the work when the jars are already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pom="$here/pom.xml"

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "wxsub kafka: '$1' not found; install Java 17 and Maven," \
      "e.g. 'apt-get install maven openjdk-17-jre-headless'" >&2
    exit 2
  }
}
need java
need mvn

version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1)
home=${WXSUB_KAFKA_HOME:-$HOME/.cache/wxsub/kafka-$version}
libs="$home/libs"
stamp="$home/.fetched"
want=$(sha256sum "$pom" | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$libs" ]; then
  exit 0
fi
echo "==> fetching Apache Kafka $version jars into $libs"
rm -rf "$libs"
mkdir -p "$libs"
# (Debian's Maven prints bare colour codes even with -B; strip them)
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs" 2>&1 \
  | sed 's/\x1b\[[0-9;]*m//g'

count=$(find "$libs" -name '*.jar' | wc -l)
if [ "$count" -eq 0 ]; then
  echo "wxsub kafka: Maven resolved no jars into $libs" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "==> $count Kafka jars ready"
