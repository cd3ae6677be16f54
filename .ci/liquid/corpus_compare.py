"""Checks that ruby-liquid renders the Liquid corpus exactly as committed in expected.json.

`cargo test -p eddy-liquid --test conformance` holds eddy to the same file, so together the
two say: eddy renders every corpus template as Shopify's Ruby Liquid does.
Usage: python3 corpus_compare.py EXPECTED_JSON RUBY_OUTPUT_JSON RUBY_LIQUID_VERSION
"""
import json
import sys

committed = json.load(open(sys.argv[1]))
ruby = json.load(open(sys.argv[2]))
version = sys.argv[3]
differ = sorted(k for k in set(ruby) | set(committed) if committed.get(k) != ruby.get(k))
same = len(ruby) - len(differ)
print(f"liquid corpus: {len(ruby)} templates; ruby-liquid {version} renders {same} of them exactly as committed (and as eddy renders them)")
for k in differ[:20]:
    print(f"  {k}: committed {committed.get(k)} ruby {ruby.get(k)}")
sys.exit(1 if differ else 0)
