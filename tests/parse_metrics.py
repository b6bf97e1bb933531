"""Parses a Prometheus text exposition (stdin) with prometheus_client, the reference parser,
and prints its samples as JSON: [[name, {labels}, value], ...]. Used by the metrics tests."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
json.dump(samples, sys.stdout)
