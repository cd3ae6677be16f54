"""DuckDB answering the segment benchmark's question over the same data.

Usage: python segment_duckdb.py DATA.csv SCORE_MIN
Prints one JSON line: rows, count, load seconds, best and median query milliseconds.
"""

import json
import statistics
import sys
import time

import duckdb


def main():
    path, score_min = sys.argv[1], int(sys.argv[2])
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        "CREATE TABLE profiles AS SELECT * FROM read_csv(?, header = true, "
        "columns = {'id': 'UINTEGER', 'in_cohort': 'BOOLEAN', 'score': 'INTEGER', 'plan': 'VARCHAR', 'vip': 'BOOLEAN'})",
        [path],
    )
    load = time.perf_counter() - started
    query = (
        "SELECT count(*) FROM profiles WHERE in_cohort AND score >= ? AND plan = 'pro' AND NOT vip"
    )
    timings = []
    count = None
    for _ in range(20):
        t = time.perf_counter()
        count = con.execute(query, [score_min]).fetchone()[0]
        timings.append((time.perf_counter() - t) * 1000)
    rows = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    print(json.dumps({"rows": rows, "count": count, "load_s": load,
                      "best_ms": min(timings), "median_ms": statistics.median(timings),
                      "duckdb": duckdb.__version__}))


if __name__ == "__main__":
    main()
