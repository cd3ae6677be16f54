"""Runs the README's own commands, as written, on a fresh copy of the checkout.

The serve command and the "Using it" examples are read from README.md's text (not repeated
here), so a README that drifts from what works fails CI. Usage: readme_commands.py ROOT
"""

import http.server
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(sys.argv[1])
HEALTH = "http://127.0.0.1:8780/health"


def shell_blocks(text):
    """Every ```sh fenced block, as a list of logical lines: backslash continuations joined, and
    a quoted argument that spans lines (a JSON body) kept whole, as the shell would read it."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        lines, current, joined = [], "", False
        for raw in body.splitlines():
            # After a backslash the line simply goes on; inside quotes the newline is kept.
            current = current + raw if joined or not current else current + "\n" + raw
            joined = current.endswith("\\")
            if joined:
                current = current[:-1] + " "
                continue
            try:
                shlex.split(current, comments=True)
            except ValueError:
                continue  # an open quote: the command goes on on the next line
            if current.strip():
                lines.append(current.strip())
            current = ""
        blocks.append(lines)
    return blocks


def strip_comment(line):
    """Drops a trailing `# …` comment that stands after two or more spaces."""
    return re.split(r"\s{2,}#", line)[0].strip()


def fresh_copy(dest):
    """The tracked files of the working tree, as a new clone would have them."""
    files = subprocess.run(
        ["git", "-C", ROOT, "ls-files", "-z"], check=True, capture_output=True
    ).stdout
    tar = subprocess.Popen(
        ["tar", "-C", ROOT, "--null", "-T", "-", "-cf", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    untar = subprocess.Popen(["tar", "-C", dest, "-xf", "-"], stdin=tar.stdout)
    tar.stdin.write(files)
    tar.stdin.close()
    if tar.wait() != 0 or untar.wait() != 0:
        raise SystemExit("could not copy the checkout")


def healthy():
    try:
        with urllib.request.urlopen(HEALTH, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def several_nodes(blocks, work, env):
    """The README's two nodes on one database, run as the block is written: a key made on the
    first works on the second, and a user tracked through the first is read through the second."""
    block = next((b for b in blocks if b and b[0].startswith("export EDDY_STORE=")), None)
    if block is None:
        raise SystemExit("no several-node example in the README")
    variables = dict(re.match(r"export (\w+)=(\S+)", strip_comment(l)).groups() for l in block if l.startswith("export "))
    database = variables["EDDY_STORE"].rsplit("/", 1)[1]
    ports = [re.search(r"--listen 127\.0\.0\.1:(\d+)", l).group(1) for l in block if " serve " in l]
    token = variables["EDDY_ADMIN_TOKEN"]
    for line in block:
        print(f"$ {line[:100]}", flush=True)
    script = "\n".join(strip_comment(l) for l in block) + "\nwait\n"
    nodes = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL)

    def call(port, path, body, bearer):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    try:
        deadline = time.time() + 600
        for port in ports:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if nodes.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"the README's node on port {port} never answered /health")
                time.sleep(0.5)
        key = call(ports[0], "/eddy/v1/workspaces/default/api-keys", {"name": "nodes"}, token)["key"]
        call(ports[0], "/users/track", {"attributes": [{"external_id": "across-nodes", "tier": "gold"}]}, key)
        found = call(ports[1], "/users/export/ids", {"external_ids": ["across-nodes"]}, key)
        if [u.get("custom_attributes", {}).get("tier") for u in found.get("users", [])] != ["gold"]:
            raise SystemExit(f"the second node does not read the first node's write: {found}")
        print(f"two nodes on {database}: a key and a write made through one are used and read through the other")
    finally:
        if nodes.poll() is None:
            os.killpg(nodes.pid, signal.SIGTERM)
            try:
                nodes.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(nodes.pid, signal.SIGKILL)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"])


def run_answered(block, work, env):
    """Runs each curl of a README block and holds its answer to the `# STATUS [BODY]` line that
    follows it: the status always, the body too when the README writes one."""
    lines = list(block)
    for i, line in enumerate(lines):
        if not line.startswith("curl"):
            continue
        said = lines[i + 1] if i + 1 < len(lines) and re.match(r"# \d{3}\b", lines[i + 1]) else None
        if said is None:
            raise SystemExit(f"the README's `{line[:60]}…` says no answer (`# STATUS [BODY]` on the next line)")
        expected_status, _, expected_body = said[2:].partition(" ")
        print(f"$ {line[:100]}…", flush=True)
        out = subprocess.run(line + " -sS -w '\\n%{http_code}'", shell=True, cwd=work, env=env, capture_output=True, text=True)
        body, _, status = out.stdout.rpartition("\n")
        if out.returncode != 0 or status != expected_status or (expected_body and body != expected_body.strip()):
            raise SystemExit(f"the README says `{said}`, eddy answered `{status} {body}` {out.stderr}")


def main():
    readme = open(os.path.join(ROOT, "README.md")).read()
    blocks = shell_blocks(readme)
    serve = [l for b in blocks for l in b if l.startswith("cargo run") and l.endswith(" serve")]
    if len(serve) != 1:
        raise SystemExit(f"expected one serve command in the README, found {serve}")
    admin = [strip_comment(l) for b in blocks for l in b if l.startswith("cargo run") and " admin " in l]
    if not admin:
        raise SystemExit("no `cargo run … admin` example in the README")
    curls = next((b for b in blocks if b and b[0].startswith("curl -X POST http://127.0.0.1:8780/users/track")), None)
    if curls is None:
        raise SystemExit("no /users/track curl example in the README")
    if healthy():
        raise SystemExit("something already answers on 127.0.0.1:8780; cannot run the README's serve command")

    work = tempfile.mkdtemp(prefix="eddy-readme-")
    env = dict(os.environ)
    # Share the build with the rest of CI; everything else (./eddy-data) is the fresh copy's own.
    env.setdefault("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    env.pop("EDDY_ADMIN_TOKEN", None)
    server = None
    try:
        fresh_copy(work)
        print(f"$ {serve[0]}", flush=True)
        log = open(os.path.join(work, "serve.log"), "w")
        server = subprocess.Popen(serve[0], shell=True, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # The first --release build of a fresh target directory takes minutes.
        deadline = time.time() + 40 * 60
        while not healthy():
            if server.poll() is not None:
                print(open(os.path.join(work, "serve.log")).read()[-4000:])
                raise SystemExit(f"the README's serve command exited with {server.returncode}")
            if time.time() > deadline:
                raise SystemExit("the README's serve command never answered /health")
            time.sleep(0.5)
        print("GET /health: 200", flush=True)

        keys = []
        for line in admin:
            print(f"$ {line}", flush=True)
            out = subprocess.run(line, shell=True, cwd=work, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"exit {out.returncode}: {out.stderr[-2000:]}")
            created = json.loads(out.stdout)
            if not created.get("key"):
                raise SystemExit(f"no key in {out.stdout!r}")
            keys.append(created["key"])

        env["KEY"] = keys[0]
        expected = next((l[2:].strip() for l in curls if l.startswith("# 201 ")), None)
        for line in (l for l in curls if l.startswith("curl")):
            print(f"$ {line[:100]}…", flush=True)
            out = subprocess.run(line + " -sS -w '\\n%{http_code}'", shell=True, cwd=work, env=env, capture_output=True, text=True)
            body, _, status = out.stdout.rpartition("\n")
            if out.returncode != 0 or not status.startswith("2"):
                raise SystemExit(f"status {status}: {body} {out.stderr}")
            if "/users/track" in line and expected and f"{status} {body}" != expected:
                raise SystemExit(f"the README says `{expected}`, eddy answered `{status} {body}`")
            if "/users/export/ids" in line and json.loads(body)["users"][0]["first_name"] != "Jane":
                raise SystemExit(f"the exported user is not the tracked one: {body}")
        # The Liquid example renders for the user the curl block above created.
        liquid = next((b for b in blocks if b and "/liquid/render" in b[0]), None)
        if liquid is None:
            raise SystemExit("no liquid/render curl example in the README")
        env["ADMIN"] = open(os.path.join(work, "eddy-data", "admin-token")).read().strip()
        said = next((l[2:].strip() for l in liquid if l.startswith("# 200 ")), None)
        line = liquid[0]
        print(f"$ {line[:100]}…", flush=True)
        out = subprocess.run(line + " -sS -w '\\n%{http_code}'", shell=True, cwd=work, env=env, capture_output=True, text=True)
        body, _, status = out.stdout.rpartition("\n")
        if f"{status} {body}" != said:
            raise SystemExit(f"the README says `{said}`, eddy answered `{status} {body}` {out.stderr}")
        # The sending example: a webhook to a receiver on port 9000, rendered for that user.
        is_send = lambda l: l.startswith("curl -X POST http://127.0.0.1:8780/messages/send")
        send = next((b for b in blocks if any(is_send(l) for l in b)), None)
        if send is None:
            raise SystemExit("no /messages/send curl example in the README")
        received = []

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                received.append((self.path, self.rfile.read(length).decode()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 9000), Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        try:
            # The block first lets the workspace reach the receiver on this machine.
            for line in (l for l in send if l.startswith("curl") and not is_send(l)):
                print(f"$ {line[:100]}…", flush=True)
                out = subprocess.run(line + " -sS -w '\\n%{http_code}'", shell=True, cwd=work, env=env, capture_output=True, text=True)
                body, _, status = out.stdout.rpartition("\n")
                if out.returncode != 0 or not status.startswith("2"):
                    raise SystemExit(f"the README's `{line[:60]}…` answered `{status} {body}` {out.stderr}")
            line = next(l for l in send if is_send(l))
            print(f"$ {line[:100]}…", flush=True)
            out = subprocess.run(line + " -sS -w '\\n%{http_code}'", shell=True, cwd=work, env=env, capture_output=True, text=True)
            body, _, status = out.stdout.rpartition("\n")
            if status != "201" or json.loads(body).get("message") != "success" or not json.loads(body).get("dispatch_id"):
                raise SystemExit(f"the README's send answered `{status} {body}` {out.stderr}")
            said = next((l for l in send if l.startswith("# 201 ")), "")
            path, text = re.search(r'gets POST (\S+) "([^"]*)"', said).groups()
            deadline = time.time() + 30
            while (path, text) not in received and time.time() < deadline:
                time.sleep(0.1)
            if (path, text) not in received:
                raise SystemExit(f"the README says the receiver gets POST {path} {text!r}; it got {received}")
        finally:
            receiver.shutdown()
        # The identity and campaign examples, each answer as the README writes it.
        examples = {
            "identities": lambda b: b[0].startswith("curl -X POST http://127.0.0.1:8780/users/track") and "anon-9" in b[0],
            "campaigns": lambda b: b[0].startswith("curl -X POST http://127.0.0.1:8780/eddy/v1/workspaces/default/campaigns"),
        }
        for name, found in examples.items():
            block = next((b for b in blocks if b and found(b)), None)
            if block is None:
                raise SystemExit(f"no {name} example block in the README")
            run_answered(block, work, env)
        # The PostgreSQL store's migrate command, against the machine's PostgreSQL.
        migrate = [strip_comment(l) for b in blocks for l in b if l.startswith("cargo run") and " migrate --store " in l]
        if len(migrate) != 1:
            raise SystemExit(f"expected one migrate command in the README, found {migrate}")
        database = migrate[0].rsplit("/", 1)[1]
        existed = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc",
                                  f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
                                 capture_output=True, text=True).stdout.strip() == "1"
        print(f"$ {migrate[0]}", flush=True)
        out = subprocess.run(migrate[0], shell=True, cwd=work, env=env, capture_output=True, text=True)
        if not existed:
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"])
        source = open(os.path.join(ROOT, "crates/eddy-store/src/postgres_backend.rs")).read()
        version = re.search(r"pub const SCHEMA_VERSION: i32 = (\d+);", source).group(1)
        if out.returncode != 0 or f"schema version {version}" not in out.stdout:
            raise SystemExit(f"the README's migrate command: exit {out.returncode}: {out.stdout} {out.stderr[-2000:]}")
        print(out.stdout.strip())
        several_nodes(blocks, work, env)
        print("the README's serve, admin, curl, Liquid, sending, identity, campaign, migrate and several-node commands work as written")
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


main()
