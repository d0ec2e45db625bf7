#!/usr/bin/env python3
"""Replicas behind a balancer: two `egret serve` replicas on loopback, reached either through
nginx with deploy/nginx/egret.conf (--balancer nginx) or through gRPC's own client-side
round_robin over both addresses, as a headless Kubernetes Service gives them
(--balancer round_robin). Either way it shows:

  spread    calls spread over both replicas (each replica's GetStats counts some);
  rolling   a rolling restart under steady load (8 clients; SIGTERM replica A, start it again,
            then the same for B) loses no call. While A drains, with a long call of its own in
            flight: a new connection to A is refused, a channel connected to A before leaves
            READY (GOAWAY) and a new call on it fails UNAVAILABLE, and the call in flight ends OK;
  sigkill   a replica killed with SIGKILL: calls started after it go to the other one.

Clients use gRPC's standard retry policy (a service config with retryPolicy on UNAVAILABLE):
see docs/deploy.md for the one case it covers. --no-retry turns it off (for measuring that case;
the test may then fail).

    /usr/bin/python3 tests/test_balancing.py --egret build/egret --balancer nginx [--load-s 60]

Needs Debian's python3-grpcio, python3-protobuf, protobuf-compiler and, for nginx, nginx
(scripts/install-deps.sh). nginx runs as this user: `nginx -p TMP -c TMP/nginx.conf`, listening
on a unix socket in TMP, with its pid, temp files and logs there too.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # see tests/test_grpc_python.py
try:
    import grpc
except ImportError:
    if os.path.exists("/usr/bin/python3") and not os.environ.get("EGRET_PY_REEXEC"):
        os.environ["EGRET_PY_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] +
                 sys.argv[1:])
    sys.exit("test_balancing.py: cannot import grpc; install python3-grpcio, python3-protobuf")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models/shapes-idefics")
IMAGE = os.path.join(ROOT, "examples/scene-002.png")
NGINX_CONF = os.path.join(ROOT, "deploy/nginx/egret.conf")
CLIENTS = 8
CALL_TIMEOUT = 60  # seconds: a hang fails instead of blocking the test
GRACE = 20  # the replicas' --grace

# UNAVAILABLE: a call in flight on a replica that died. CANCELLED: a call that reached a
# draining replica in the instant before its GOAWAY reached the client, which gRPC's server
# core cancels (docs/deploy.md). Generation has no side effects, so both are safe to retry.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
# A replica restarted at the same address is found again within a second (gRPC's default
# reconnect backoff grows to 120 s).
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]

pb = hpb = None
TMP = None
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL: " + msg, flush=True)
    return cond


def log(msg):
    print("[%6.1f] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


def load_messages():
    global pb, hpb
    proc = subprocess.run(["protoc", "--python_out=" + TMP, "-I", "proto",
                           "proto/egret/v1/egret.proto", "proto/grpc/health/v1/health.proto"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("protoc failed: " + proc.stderr)

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, os.path.join(TMP, path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    pb = load("egret_pb2", "egret/v1/egret_pb2.py")
    hpb = load("health_pb2", "grpc/health/v1/health_pb2.py")


def rpc(channel, path, req_cls, resp_cls, stream=False):
    make = channel.unary_stream if stream else channel.unary_unary
    return make(path, request_serializer=req_cls.SerializeToString,
                response_deserializer=resp_cls.FromString)


def generate(channel, req, timeout=CALL_TIMEOUT):
    return rpc(channel, "/egret.v1.Egret/Generate", pb.GenerateRequest,
               pb.GenerateResponse)(req, timeout=timeout)


def stats(channel):
    return rpc(channel, "/egret.v1.Egret/GetStats", pb.GetStatsRequest,
               pb.ServerStats)(pb.GetStatsRequest(), timeout=10)


def health(channel):
    return rpc(channel, "/grpc.health.v1.Health/Check", hpb.HealthCheckRequest,
               hpb.HealthCheckResponse)(hpb.HealthCheckRequest(), timeout=2).status


def caption_request(max_new_tokens=12):
    req = pb.GenerateRequest(use_template=True, max_new_tokens=max_new_tokens)
    with open(IMAGE, "rb") as f:
        req.parts.add(image=f.read())
    return req


def die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---- replicas ----

class Replica:
    """`egret serve` on 127.0.0.1: port 0 the first time (it reports the port it bound), the
    same port again after a restart, as a balancer's fixed address list expects."""

    def __init__(self, name, egret):
        self.name, self.egret, self.port, self.proc, self.starts = name, egret, 0, None, 0
        self.logs = []

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(TMP, "%s.%d.log" % (self.name, self.starts))
        self.logs.append(self.log_path)
        self.log_file = open(self.log_path, "wb")
        # no warm-up: restarts stay quick under the 90 s wait (test_warmup covers the warm-up)
        self.proc = subprocess.Popen(
            [self.egret, "serve", "--no-warmup", "--model", MODEL, "--listen",
             "127.0.0.1:%d" % self.port, "--grace", str(GRACE)], cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log_file, preexec_fn=die_with_parent)

    def log_text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_serving(self, timeout=90):
        deadline = time.monotonic() + timeout
        while not self.port:
            m = re.search(r"^egret: serving \S+ on 127\.0\.0\.1:(\d+)", self.log_text(), re.M)
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("replica %s did not start:\n%s" % (self.name, self.log_text()))
            else:
                time.sleep(0.1)
        while True:
            if self.proc.poll() is not None:
                sys.exit("replica %s exited:\n%s" % (self.name, self.log_text()))
            channel = grpc.insecure_channel(self.addr())
            try:
                if health(channel) == hpb.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            finally:
                channel.close()
            if time.monotonic() > deadline:
                sys.exit("replica %s not SERVING:\n%s" % (self.name, self.log_text()))
            time.sleep(0.1)

    def addr(self):
        return "127.0.0.1:%d" % self.port

    def stats(self):
        channel = grpc.insecure_channel(self.addr())
        try:
            return stats(channel)
        finally:
            channel.close()

    def wait_exit(self, timeout):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        self.log_file.close()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---- balancers ----

def start_nginx(replicas):
    """deploy/nginx/egret.conf as shipped, with the replicas' addresses and a unix socket to
    listen on, inside a minimal nginx.conf whose pid, temp files and logs are under TMP."""
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        sys.exit("nginx not found: install it (scripts/install-deps.sh)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with open(NGINX_CONF, encoding="utf-8") as f:
        conf = f.read()
    servers = re.findall(r"^\s*server 127\.0\.0\.1:\d+ .*$", conf, re.M)
    check(len(servers) == 2, "deploy/nginx/egret.conf lists %d replicas, want 2" % len(servers))
    for line, r in zip(servers, replicas):
        conf = conf.replace(line, re.sub(r"127\.0\.0\.1:\d+", r.addr(), line), 1)
    sock = os.path.join(TMP, "nginx.sock")
    conf, n = re.subn(r"^(\s*)listen 8080 http2;", r"\1listen unix:%s http2;" % sock, conf,
                      flags=re.M)
    check(n == 1, "deploy/nginx/egret.conf: no 'listen 8080 http2;' line to replace")
    with open(os.path.join(TMP, "egret.conf"), "w", encoding="utf-8") as f:
        f.write(conf)
    temps = "".join("    %s_temp_path %s;\n" % (k, os.path.join(TMP, k))
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = ("pid %s;\nerror_log %s warn;\nevents { worker_connections 1024; }\nhttp {\n"
            "    access_log %s;\n%s    include %s;\n}\n" %
            (os.path.join(TMP, "nginx.pid"), os.path.join(TMP, "nginx-error.log"),
             os.path.join(TMP, "nginx-access.log"), temps, os.path.join(TMP, "egret.conf")))
    with open(os.path.join(TMP, "nginx.conf"), "w", encoding="utf-8") as f:
        f.write(main)
    proc = subprocess.Popen([nginx, "-p", TMP, "-c", os.path.join(TMP, "nginx.conf"), "-e",
                             os.path.join(TMP, "nginx-error.log"), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(TMP, "nginx.stderr"), "wb"),
                            preexec_fn=die_with_parent)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(os.path.join(TMP, "nginx.stderr"), encoding="utf-8") as f:
                sys.exit("nginx did not start: " + f.read())
        time.sleep(0.05)
    return proc, "unix:" + sock


def service_config(balancer, retry):
    config = {}
    if balancer == "round_robin":
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if retry:
        config["methodConfig"] = [{"name": [{"service": "egret.v1.Egret"}],
                                   "retryPolicy": RETRY_POLICY}]
    return json.dumps(config)


# ---- load ----

class Load:
    """CLIENTS threads, each with its own channel (as separate client processes would have),
    calling Generate back to back; every call's start, end and status are kept."""

    def __init__(self, make_channel, want_text):
        self.make_channel, self.want_text = make_channel, want_text
        self.stop = threading.Event()
        self.calls = []  # (started, ended, code name, details)
        self.mu = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True)
                        for _ in range(CLIENTS)]

    def client(self):
        channel = self.make_channel()
        req = caption_request()
        try:
            while not self.stop.is_set():
                t = time.monotonic()
                try:
                    r = generate(channel, req)
                    code, details = "OK", ""
                    if r.text != self.want_text:
                        code, details = "WRONG_TEXT", repr(r.text)
                except grpc.RpcError as e:
                    code, details = e.code().name, e.details()
                with self.mu:
                    self.calls.append((t, time.monotonic(), code, details))
        finally:
            channel.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(CALL_TIMEOUT + 10)

    def failed(self, since=0.0):
        with self.mu:
            return [c for c in self.calls if c[0] >= since and c[2] != "OK"]

    def count(self):
        with self.mu:
            return len(self.calls)


def wait_for_traffic(replica, timeout=30):
    """Until the balancer sends the (re)started replica calls again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.stats().requests_total > 0:
            return True
        time.sleep(0.2)
    return False


def connect_refused(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def wait_state(channel, accept, timeout):
    """Waits until the channel's connectivity is in `accept`; returns the last state seen."""
    seen = []
    event = threading.Event()

    def on_change(state):
        seen.append(state)
        if state in accept:
            event.set()

    channel.subscribe(on_change)
    event.wait(timeout)
    channel.unsubscribe(on_change)
    return seen[-1] if seen else None


def drain_under_watch(replica):
    """SIGTERM with a long call of the replica's own in flight on a channel connected before.
    While that call is still streaming: new connections are refused, that channel is told
    GOAWAY (leaves READY) and a new call on it fails UNAVAILABLE. Then the call ends OK."""
    early = grpc.insecure_channel(replica.addr())
    n_tokens = 500  # seconds of streaming on lavapipe: outlasts the checks below
    req = pb.GenerateRequest(max_new_tokens=n_tokens, ignore_eos=True)
    with open(IMAGE, "rb") as f:
        req.parts.add(image=f.read())
    stream = rpc(early, "/egret.v1.Egret/GenerateStream", pb.GenerateRequest,
                 pb.GenerateResponse, stream=True)(req, timeout=CALL_TIMEOUT)
    got = {"tokens": 0, "code": None}
    first = threading.Event()

    def read():
        try:
            for m in stream:
                got["tokens"] += len(m.token_ids)
                first.set()
            got["code"] = stream.code()
        except grpc.RpcError as e:
            got["code"] = e.code()
        first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    check(first.wait(CALL_TIMEOUT), "the long call on %s never started" % replica.name)
    replica.proc.send_signal(signal.SIGTERM)
    left = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.CONNECTING)
    state = wait_state(early, left, 2)
    check(state in left, "a channel connected to draining %s stays %s: no GOAWAY" %
          (replica.name, state))
    refused = False
    for _ in range(20):  # the signal is handled within the server's 100 ms loop
        if connect_refused(replica.port):
            refused = True
            break
        time.sleep(0.05)
    check(refused, "a new connection to draining %s was accepted" % replica.name)
    try:
        generate(early, caption_request(), timeout=10)
        check(False, "a new call on a channel to draining %s succeeded" % replica.name)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNAVAILABLE,
              "a new call on a channel to draining %s: %s %s, want UNAVAILABLE" %
              (replica.name, e.code().name, e.details()))
    # All of that while the call was in flight, not after it ended.
    check(reader.is_alive(), "the long call on %s ended (%s, %d tokens) before the checks did: "
          "they proved nothing" % (replica.name, got["code"], got["tokens"]))
    reader.join(CALL_TIMEOUT)
    check(got["code"] == grpc.StatusCode.OK and got["tokens"] == n_tokens,
          "the call in flight on draining %s ended %s after %d of %d tokens" %
          (replica.name, got["code"], got["tokens"], n_tokens))
    early.close()
    log("%s drained, got %d tokens of its long call" % (replica.name, got["tokens"]))


def main():
    global TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--egret", default=os.path.join(ROOT, "build/egret"))
    ap.add_argument("--balancer", choices=("nginx", "round_robin"), required=True)
    ap.add_argument("--load-s", type=float, default=60.0, help="rolling restart load window")
    ap.add_argument("--no-retry", action="store_true", help="clients without a retry policy")
    args = ap.parse_args()
    TMP = tempfile.mkdtemp(prefix="egret-bal-")
    replicas = [Replica("A", args.egret), Replica("B", args.egret)]
    nginx = None
    try:
        load_messages()
        for r in replicas:
            r.start()
        for r in replicas:
            r.wait_serving()
        log("replicas on %s" % ", ".join(r.addr() for r in replicas))
        # Each client its own connection, as separate processes would have (gRPC shares one
        # between channels alike by default).
        options = [("grpc.service_config", service_config(args.balancer, not args.no_retry)),
                   ("grpc.use_local_subchannel_pool", 1)] + RECONNECT
        if args.balancer == "nginx":
            nginx, target = start_nginx(replicas)
        else:
            target = "ipv4:" + ",".join(r.addr() for r in replicas)

        def make_channel():
            return grpc.insecure_channel(target, options=options)

        channel = make_channel()
        want = generate(channel, caption_request()).text
        check(want != "", "empty caption")

        # spread
        for _ in range(16):
            generate(channel, caption_request())
        counts = [r.stats().requests_total for r in replicas]
        log("spread: 17 calls, per replica %s" % counts)
        check(all(c > 0 for c in counts) and sum(counts) == 17,
              "calls per replica %s: not spread over both" % counts)
        channel.close()

        # rolling restart under load
        start = time.monotonic()
        with Load(make_channel, want) as load:
            time.sleep(min(5, args.load_s / 8))
            for r in replicas:
                log("rolling: draining %s under load" % r.name)
                drain_under_watch(r)
                rc = r.wait_exit(GRACE + 5)
                check(rc == 0, "%s exit code %s after SIGTERM" % (r.name, rc))
                r.start()
                r.wait_serving()
                check(wait_for_traffic(r), "%s gets no calls after its restart" % r.name)
                time.sleep(2)  # every client reconnected to it (RECONNECT)
                log("rolling: %s back and serving calls" % r.name)
            time.sleep(max(0, args.load_s - (time.monotonic() - start)))
        bad = load.failed()
        log("rolling: %d calls in %.0f s, %d not OK %s" %
            (load.count(), time.monotonic() - start, len(bad), bad[:5]))
        check(load.count() > CLIENTS and not bad, "calls lost during the rolling restart")
        for r in replicas:
            text = r.log_text()
            check("shutting down" not in text,
                  "%s accepted a call after it began draining:\n%s" % (r.name, text))

        # sigkill
        with Load(make_channel, want) as load:
            time.sleep(2)
            replicas[1].kill()
            killed_at = time.monotonic()
            n_before = load.count()
            time.sleep(4)
        after = [c for c in load.calls if c[0] >= killed_at]
        bad_after = load.failed(killed_at)
        log("sigkill: %d calls before, %d started after the kill, %d of those not OK, "
            "%d not OK in all %s" % (n_before, len(after), len(bad_after), len(load.failed()),
                                     load.failed()[:5]))
        check(len(after) > CLIENTS and not bad_after, "calls after SIGKILL failed")
        check(not load.failed(), "calls in flight at SIGKILL were lost")
        check(replicas[0].stats().requests_total > 0, "A served nothing after B was killed")
        for r in replicas:  # with EGRET_VALIDATION=1 (ctest) the layer must stay silent
            for path in r.logs:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                check("vulkan validation:" not in text,
                      "validation messages in %s:\n%s" % (os.path.basename(path), text[-3000:]))
    finally:
        if nginx:
            nginx.terminate()
            nginx.wait()
        for r in replicas:
            r.kill()
        if failures and nginx:
            for name in ("nginx-error.log",):
                path = os.path.join(TMP, name)
                if os.path.exists(path):
                    with open(path, encoding="utf-8", errors="replace") as f:
                        print("---- %s (tail)\n%s" % (name, f.read()[-3000:]))
        shutil.rmtree(TMP, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("OK (%.0f s)" % (time.monotonic() - T0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
