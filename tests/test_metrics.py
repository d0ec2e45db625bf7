#!/usr/bin/env python3
"""The metrics endpoint and the JSON request log of `egret serve`, against the real tools.

    /usr/bin/python3 tests/test_metrics.py --egret build/egret [-v] [unittest args]

One server (`--metrics-listen 127.0.0.1:0 --log-format json`, warm-up on) answers a few
requests, OK and failed (a bad image, an unknown method whose path holds quotes, backslashes and
a bidirectional override), then:
  - `promtool check metrics` passes on a real scrape, whose counters match the requests;
  - a Prometheus server (Debian's `prometheus`, temp config with a 1 s scrape interval, temp
    TSDB, free port, loopback) scrapes Egret, and a counter read back through its HTTP query API
    (/api/v1/query) has the right value;
  - bad requests to the endpoint (POST with a body, other methods, other paths, headers over the
    limit, more connections than allowed, a connection that never finishes its request) get
    404/405/431 or are closed, and the endpoint and the gRPC server keep serving;
  - requests after the warm-up ran no pipeline for the first time
    (egret_pipelines_first_dispatched_total is constant);
  - every request log line on stderr is one JSON object with the text line's fields, the
    hostile method path intact in its error.
Needs Debian's prometheus (prometheus, promtool) and python3-grpcio (scripts/install-deps.sh): a
missing tool fails the test.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
try:
    import grpc
except ImportError:
    if os.path.exists("/usr/bin/python3") and not os.environ.get("EGRET_PY_REEXEC"):
        os.environ["EGRET_PY_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("test_metrics.py: cannot import grpc; install python3-grpcio (scripts/install-deps.sh)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EGRET = os.path.join(ROOT, "build/egret")
IMAGE = os.path.join(ROOT, "examples/scene-001.png")
HOSTILE_METHOD = '/egret.v1.Egret/No"such\\method\u202eevil'
OK_CALLS = 3  # egret caption calls answered OK at the start
ok_calls = 0  # all of them so far (tests run one at a time: nothing else calls meanwhile)
TMP = None
SERVER = None


def die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, fn, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


class Egret:
    def __init__(self):
        self.sock = "unix:" + os.path.join(TMP, "egret.sock")
        self.stderr_path = os.path.join(TMP, "egret.stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [EGRET, "serve", "--listen", self.sock, "--metrics-listen", "127.0.0.1:0",
             "--log-format", "json", "--pipeline-cache", os.path.join(TMP, "pipelines")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
            preexec_fn=die_with_parent)
        self.port = int(wait_for("egret serve to start", self._started).split("(port ")[1]
                        .split(")")[0])

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8")

    def _started(self):
        if self.proc.poll() is not None:
            raise AssertionError("egret serve exited: " + self.log())
        lines = self.log().splitlines()
        metrics = [l for l in lines if l.startswith("egret: metrics on ")]
        return metrics[0] if metrics and any(l.startswith("egret: serving") for l in lines) else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.stderr.close()
        return rc


def scrape(port, timeout=10):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
        assert r.status == 200, r.status
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        return r.read().decode("utf-8")


def sample(text, name, labels=""):
    """The value of series name{labels} in an exposition (labels as written there)."""
    key = name + ("{" + labels + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split(" ")[1])
    return None


def caption(args):
    global ok_calls
    r = subprocess.run([EGRET, "caption", "--server", SERVER.sock, "--timeout", "60"] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                          preexec_fn=die_with_parent)
    ok_calls += r.returncode == 0
    return r


def raw_http(port, data, read=True):
    """Sends raw bytes to the endpoint; returns the status line ('' if the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not read:
            return ""
        try:
            first = s.recv(4096).decode("latin-1")
        except (ConnectionResetError, socket.timeout):
            return ""
        return first.split("\r\n")[0]


def setUpModule():
    global TMP, SERVER
    for tool in ("promtool", "prometheus"):
        if not shutil.which(tool):
            raise AssertionError("%s is missing: install prometheus (scripts/install-deps.sh)" % tool)
    TMP = tempfile.mkdtemp(prefix="egret-test-%d-metrics-" % os.getpid())
    SERVER = Egret()
    SERVER.warm_pipelines = sample(scrape(SERVER.port), "egret_pipelines_first_dispatched_total")
    for _ in range(OK_CALLS):
        r = caption([IMAGE])
        assert r.returncode == 0, r.stderr
    bad = os.path.join(TMP, "not-an-image.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG but not really")
    r = caption([bad])
    assert r.returncode != 0
    with grpc.insecure_channel(SERVER.sock) as ch:
        try:
            ch.unary_unary(HOSTILE_METHOD)(b"", timeout=30)
            raise AssertionError("an unknown method answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e


def tearDownModule():
    if SERVER:
        rc = SERVER.stop()
        assert rc == 0, "egret serve exited with %s" % rc
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


class Exposition(unittest.TestCase):
    def test_promtool_passes_and_counts_match(self):
        text = scrape(SERVER.port)
        path = os.path.join(TMP, "scrape.txt")
        with open(path, "w") as f:
            f.write(text)
        with open(path, "rb") as f:
            r = subprocess.run(["promtool", "check", "metrics"], stdin=f, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode())
        self.assertEqual(r.stdout.decode().strip(), "", "promtool has remarks")
        self.assertEqual(sample(text, "egret_requests_total", 'method="Generate",code="OK"'),
                         ok_calls)
        self.assertEqual(sample(text, "egret_requests_total",
                                'method="Generate",code="INVALID_ARGUMENT"'), 1)
        self.assertEqual(sample(text, "egret_requests_total",
                                'method="unknown",code="UNIMPLEMENTED"'), 1)
        self.assertEqual(sample(text, "egret_generation_requests_total", 'outcome="ok"'), ok_calls)
        self.assertEqual(sample(text, "egret_time_to_first_token_seconds_count",
                                'method="Generate"'), ok_calls)
        self.assertEqual(sample(text, "egret_request_duration_seconds_count",
                                'method="Generate"'), ok_calls + 1)
        # one image, sent by every OK call: the first missed, the others hit (the warm-up's own
        # images are not counted)
        self.assertEqual(sample(text, "egret_image_cache_hits_total"), ok_calls - 1)
        self.assertEqual(sample(text, "egret_image_cache_entries"), 1)
        self.assertGreater(sample(text, "egret_device_memory_bytes"), 0)
        self.assertGreater(sample(text, "egret_batch_occupancy_count"), 0)
        self.assertIn('egret_model_info{model="shapes-idefics"', text)
        start = sample(text, "process_start_time_seconds")
        self.assertTrue(time.time() - 3600 < start <= time.time(), start)

    def test_warm_start_compiles_nothing_while_serving(self):
        self.assertIsNotNone(SERVER.warm_pipelines)
        self.assertGreater(SERVER.warm_pipelines, 0)
        self.assertEqual(sample(scrape(SERVER.port), "egret_pipelines_first_dispatched_total"),
                         SERVER.warm_pipelines, "a request after the warm-up ran a new pipeline")


class PrometheusScrape(unittest.TestCase):
    def test_counter_read_back_through_prometheus(self):
        port = free_port()
        data = os.path.join(TMP, "tsdb")
        cfg = os.path.join(TMP, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: egret\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % SERVER.port)
        log = open(os.path.join(TMP, "prometheus.log"), "wb")
        prom = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + data,
             "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent)
        try:
            def query(q):
                if prom.poll() is not None:
                    raise AssertionError("prometheus exited: " +
                                         open(os.path.join(TMP, "prometheus.log")).read())
                url = "http://127.0.0.1:%d/api/v1/query?%s" % (
                    port, urllib.parse.urlencode({"query": q}))
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        body = json.load(r)
                except (OSError, http.client.HTTPException):
                    return None
                self.assertEqual(body["status"], "success", body)
                res = body["data"]["result"]
                return res[0]["value"][1] if res else None

            q = 'egret_requests_total{method="Generate",code="OK"}'
            got = wait_for("Prometheus to scrape Egret", lambda: query(q), timeout=90)
            self.assertEqual(float(got), ok_calls)
            self.assertEqual(float(wait_for("up", lambda: query('up{job="egret"}'))), 1)
        finally:
            prom.send_signal(signal.SIGTERM)
            try:
                prom.wait(30)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()


class BadRequests(unittest.TestCase):
    def assert_still_serving(self):
        self.assertIsNotNone(sample(scrape(SERVER.port), "egret_requests_total",
                                    'method="Generate",code="OK"'))

    def test_only_get_metrics_answers(self):
        port = SERVER.port
        cases = [
            (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "405"),
            (b"PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "405"),
            (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
            (b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            (b"GET /metrics/x HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", "431"),
            (b"GET /" + b"m" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "414"),
        ]
        for req, code in cases:
            line = raw_http(port, req)
            self.assertIn(code, line, "%r... got %r" % (req[:40], line))
            self.assert_still_serving()
        # a large body is refused without being read
        line = raw_http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000"
                        b"\r\n\r\n" + b"x" * 65536)
        self.assertIn("405", line)
        # garbage instead of HTTP
        raw_http(port, b"\x00\x01\x02 not http at all\r\n\r\n")
        self.assert_still_serving()

    def test_connection_floods_and_stalls(self):
        # Slots held by clients that went away must be freed when they close, not when the
        # endpoint's 10 s idle timeout expires: each round's scrape must answer within 5 s.
        port = SERVER.port
        for _ in range(5):
            held = []
            try:
                for _ in range(48):  # over the endpoint's 32 connections
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
                    held.append(s)
            finally:
                for s in held:
                    s.close()
            self.assertIsNotNone(sample(scrape(port, timeout=5), "egret_requests_total",
                                        'method="Generate",code="OK"'))
        r = caption([IMAGE])
        self.assertEqual(r.returncode, 0, r.stderr)


class JsonLog(unittest.TestCase):
    def test_request_lines_are_json_with_the_fields(self):
        lines = [l for l in SERVER.log().splitlines() if l.startswith("{")]
        self.assertGreaterEqual(len(lines), OK_CALLS + 2)
        objs = [json.loads(l) for l in lines]
        fields = {"time", "request", "method", "peer", "status", "images", "prompt_tokens",
                  "generated", "ttft", "total", "queue"}
        for o in objs:
            self.assertTrue(fields <= set(o), o)
        ok = [o for o in objs if o["method"] == "Generate" and o["status"] == "OK"]
        self.assertGreaterEqual(len(ok), OK_CALLS)
        self.assertTrue(all(o["images"] == 1 and o["generated"] > 0 and o["total"] > 0
                            for o in ok), ok)
        bad = [o for o in objs if o["status"] == "INVALID_ARGUMENT"]
        self.assertTrue(bad and "image 0" in bad[0]["error"], bad)
        hostile = [o for o in objs if o["status"] == "UNIMPLEMENTED"]
        self.assertEqual(len(hostile), 1, objs)
        # the text log's escaping of the path shows through (\" and \\ as in the text line,
        # the override as \u{202E}); the JSON stays one valid object on one line
        self.assertIn('No\\"such\\\\method\\u{202E}evil', hostile[0]["error"])
        for l in SERVER.log().splitlines():
            if l.startswith("egret: request"):
                self.fail("a text request line in JSON mode: " + l)


class SetGauges(unittest.TestCase):
    """Runs after the classes that count cache hits (unittest orders classes by name): a set's
    pinned image would change their figures."""

    def test_example_sets_are_gauged(self):
        r = subprocess.run([EGRET, "examples", "create", "--server", SERVER.sock,
                            "--example", os.path.join(ROOT, "examples/scene-002.png"),
                            "a small red diamond in the center."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                           preexec_fn=die_with_parent)
        self.assertEqual(r.returncode, 0, r.stderr)
        text = scrape(SERVER.port)
        self.assertEqual(sample(text, "egret_example_sets"), 1)
        self.assertGreater(sample(text, "egret_example_set_bytes"), 0)
        self.assertGreater(sample(text, "egret_example_set_budget_bytes"),
                           sample(text, "egret_example_set_bytes"))
        self.assertEqual(sample(text, "egret_requests_total",
                                'method="CreateExampleSet",code="OK"'), 1)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--egret" in args:
        i = args.index("--egret")
        EGRET = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    unittest.main(argv=[sys.argv[0]] + args)
