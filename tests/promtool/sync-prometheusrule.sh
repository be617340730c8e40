#!/bin/sh
# Regenerates manifests/prometheusrule.yaml (Prometheus Operator) from
# manifests/prometheus-rules.yaml (plain Prometheus): the same groups, indented under `spec:`.
# `cargo test -p nodeguard-metrics --test promtool` fails while the two differ.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
src="$root/manifests/prometheus-rules.yaml"
dst="$root/manifests/prometheusrule.yaml"
grep -q '^groups:' "$src" || { echo "no top-level 'groups:' in $src" >&2; exit 1; }
{
  cat <<'HEADER'
# nodeguard alerting rules for the Prometheus Operator. GENERATED from
# manifests/prometheus-rules.yaml by tests/promtool/sync-prometheusrule.sh: edit that file
# (its comments explain each rule and the assumptions), then rerun the script.
#
# Apply it in the namespace your Prometheus watches for rules. Prometheus selects
# PrometheusRules by label (spec.ruleSelector); kube-prometheus-stack's default selector wants
# `release: <helm release name>`: add that label, or widen the selector.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: nodeguard
  labels:
    app.kubernetes.io/name: nodeguard
    app.kubernetes.io/component: alerting-rules
spec:
HEADER
  # Everything from `groups:` on, two spaces deeper; blank lines stay blank.
  sed -n '/^groups:/,$p' "$src" | sed 's/^\(.\)/  \1/'
} > "$dst.tmp"
mv "$dst.tmp" "$dst"
echo "wrote $dst"
