"""DuckDB computing the sync benchmark's diff from the two snapshots.

Usage: python sync_duckdb.py BEFORE.csv AFTER.csv
Prints one JSON line: added, changed, removed, and the seconds to load and to diff.
"""

import json
import sys
import time

import duckdb


def main():
    before, after = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute("CREATE TABLE a AS SELECT * FROM read_csv(?, header = true, all_varchar = true)", [before])
    con.execute("CREATE TABLE b AS SELECT * FROM read_csv(?, header = true, all_varchar = true)", [after])
    loaded = time.perf_counter()
    added = con.execute(
        "SELECT count(*) FROM b ANTI JOIN a USING (external_id)").fetchone()[0]
    removed = con.execute(
        "SELECT count(*) FROM a ANTI JOIN b USING (external_id)").fetchone()[0]
    changed = con.execute(
        "SELECT count(*) FROM (SELECT * FROM b EXCEPT SELECT * FROM a) d "
        "SEMI JOIN a USING (external_id)").fetchone()[0]
    done = time.perf_counter()
    print(json.dumps({"added": added, "changed": changed, "removed": removed,
                      "load_s": loaded - started, "diff_s": done - loaded,
                      "total_s": done - started, "duckdb": duckdb.__version__}))


if __name__ == "__main__":
    main()
