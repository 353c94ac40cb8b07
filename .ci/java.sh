#!/usr/bin/env bash
# A Java runtime for the Spark engine tests (tests/integration/test_data_spark.py): pyspark 4 needs
# Java 17 or later. Installs Debian's headless JRE only when no `java` is found; prints nothing on success.
set -euo pipefail
if command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "java.sh: no Java runtime, and not root to install openjdk-17-jre-headless" >&2
    exit 1
  fi
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
command -v java >/dev/null 2>&1
