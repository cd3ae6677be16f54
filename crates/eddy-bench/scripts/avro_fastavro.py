"""fastavro writing the same CustomEvent records as eddy, in files of 15,000 records.

Usage: python avro_fastavro.py RECORDS.ndjson SCHEMA.avsc EDDY_FILE.avro
Prints one JSON line: records, best seconds of 3 runs, and the records fastavro read back from
eddy's file (a cross-check that eddy's output is valid).
"""

import io
import json
import sys
import time

import fastavro


def main():
    records_path, schema_path, eddy_file = sys.argv[1:4]
    records = [json.loads(line) for line in open(records_path)]
    schema = fastavro.parse_schema(json.load(open(schema_path)))
    best = None
    for _ in range(3):
        started = time.perf_counter()
        for start in range(0, len(records), 15000):
            out = io.BytesIO()
            fastavro.writer(out, schema, records[start:start + 15000], codec="null")
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    read_back = sum(1 for _ in fastavro.reader(open(eddy_file, "rb")))
    print(json.dumps({"records": len(records), "best_s": best, "read_back": read_back,
                      "fastavro": fastavro.__version__}))


if __name__ == "__main__":
    main()
