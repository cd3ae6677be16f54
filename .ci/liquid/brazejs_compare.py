"""Compares eddy's rendering of the Braze-dialect cases with brazejs's.

brazejs renders an aborted message as the abort reason; eddy reports the abort (exit 3,
"aborted: reason" on stderr), so an abort compares by its reason.
Usage: python3 brazejs_compare.py EDDY CASES_JSON BRAZEJS_OUTPUT_JSON
"""
import json
import subprocess
import sys
import tempfile

eddy, cases_path, brazejs_path = sys.argv[1:4]
spec = json.load(open(cases_path))
expected = json.load(open(brazejs_path))
failures = []
with tempfile.TemporaryDirectory() as tmp:
    vars_path = f"{tmp}/vars.json"
    json.dump(spec["vars"], open(vars_path, "w"))
    for name, template in spec["cases"].items():
        path = f"{tmp}/{name}.liquid"
        open(path, "w").write(template)
        run = subprocess.run([eddy, "liquid", "render", path, "--vars", vars_path], capture_output=True, text=True)
        if run.returncode == 3:
            got = run.stderr.strip().removeprefix("aborted: ")
        elif run.returncode == 0:
            got = run.stdout
        else:
            got = f"exit {run.returncode}: {run.stderr.strip()}"
        if got != expected[name]:
            failures.append(f"{name}: eddy {got!r}, brazejs {expected[name]!r}")
print(f"braze dialect: {len(spec['cases']) - len(failures)} of {len(spec['cases'])} cases equal to brazejs")
for f in failures:
    print("  " + f)
sys.exit(1 if failures else 0)
