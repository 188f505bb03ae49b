#!/usr/bin/env python3
"""Parses an OpenMetrics exposition (stdin) with the Prometheus project's own parser,
prometheus_client.openmetrics.parser (PyPI prometheus-client), and prints its samples
as JSON. Strict: whatever the parser refuses (bad syntax, a missing `# EOF`, a counter
sample without `_total`, histogram buckets out of order, ...) exits 1 with the
parser's message on stderr.

Output: {"families": [{"name", "type", "unit", "help"}],
         "samples": [{"family", "type", "name", "labels", "value"}]}
(a value that is not finite is the string "+Inf", "-Inf" or "NaN").
"""
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as classic_families


def number(v):
    """JSON has no infinities or NaN: those go out as the exposition writes them."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v


def main() -> int:
    text = sys.stdin.read()
    # --classic: the classic text format (text/plain; version=0.0.4) and its parser.
    parse = classic_families if "--classic" in sys.argv[1:] else text_string_to_metric_families
    families, samples = [], []
    try:
        # The parser is a generator: errors surface while iterating, so read it all.
        for family in parse(text):
            families.append(
                {"name": family.name, "type": family.type, "unit": family.unit, "help": family.documentation}
            )
            for s in family.samples:
                samples.append(
                    {
                        "family": family.name,
                        "type": family.type,
                        "name": s.name,
                        "labels": dict(s.labels),
                        "value": number(s.value),
                    }
                )
    except Exception as e:  # the parser raises ValueError (and others) on bad input
        print(f"OpenMetrics parse error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump({"families": families, "samples": samples}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
