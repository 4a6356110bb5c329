#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars from Maven Central into a cache outside the repository.
# Usage: deploy/kafka/fetch.sh [LIBS_DIR]   (default: ~/.cache/influgen/kafka-<version>/libs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
libs=${1:-${INFLUGEN_KAFKA_LIBS:-$HOME/.cache/influgen/kafka-$version/libs}}
if [ -f "$libs/.complete" ]; then
  echo "$libs"
  exit 0
fi
command -v mvn >/dev/null || { echo "mvn not found: install Maven (apt-get install maven)" >&2; exit 1; }
rm -rf "$libs.tmp"
mkdir -p "$libs.tmp"
# INFLUGEN_MAVEN_REPO: a separate local repository (the cold-start benchmark uses an empty one).
mvn -B -q -f "$here/pom.xml" ${INFLUGEN_MAVEN_REPO:+-Dmaven.repo.local=$INFLUGEN_MAVEN_REPO} \
  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >&2
ls "$libs.tmp"/kafka_2.13-"$version".jar >/dev/null
touch "$libs.tmp/.complete"
rm -rf "$libs"
mv "$libs.tmp" "$libs"
echo "$libs"
