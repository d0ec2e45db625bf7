#!/usr/bin/env python3
"""Interoperability: `egret serve` driven from Python with grpcio and the official protobuf
runtime, as a user's client would: messages encoded by Google's protobuf (not the server's
protobuf-c), calls, metadata, TLS, deadlines and cancellation through grpcio's channel API.

The message classes are generated from proto/ at test time with protoc (no generated code and no
grpc_tools stubs): methods are called by path with channel.unary_unary / unary_stream.

    /usr/bin/python3 tests/test_grpc_python.py --egret build/egret [-v] [unittest args]

Needs Debian's python3-grpcio, python3-protobuf, protobuf-compiler and openssl
(scripts/install-deps.sh). When `import grpc` fails (e.g. a pyenv python3 first on PATH) the script
re-runs itself under /usr/bin/python3. ctest runs it as test_grpc_python.

What it covers (tests/test_server.c covers the rest, in-process, with the C client):
  health Check and Watch; GetModelInfo; a zero-shot caption equal to examples/captions.tsv;
  streamed answers equal to the unary one; few-shot examples equal to the same prompt as parts;
  examples/python/example_sets.py, and a request by example set id equal to the pairs inline;
  bad requests answered with the right status and the server serving on; client cancellation;
  SIGTERM with calls in flight (health NOT_SERVING, GOAWAY and no new connections, calls finish,
  new calls fail UNAVAILABLE, exit 0, one log line per request); TLS with an API key, from Python
  and from `egret caption`.
"""
import math
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
import unittest
import importlib.util

# This test starts subprocesses (openssl, egret, the example client) while gRPC's threads may be
# busy; gRPC's fork handler then waits for its thread pool to go idle, and once waited forever
# ("Waiting for thread pool to idle before forking" every 3 s until ctest's 300 s timeout).
# No child here uses gRPC state inherited across fork, so the handler is turned off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

try:
    import grpc
except ImportError:
    if os.path.exists("/usr/bin/python3") and not os.environ.get("EGRET_PY_REEXEC"):
        os.environ["EGRET_PY_REEXEC"] = "1"
        os.execv("/usr/bin/python3",
                 ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("test_grpc_python.py: cannot import grpc (%s); install python3-grpcio and "
             "python3-protobuf (scripts/install-deps.sh)" % sys.executable)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(ROOT, "tests/data/shapes-cases/images")
EXAMPLES = os.path.join(ROOT, "examples")
CLIENT = os.path.join(ROOT, "examples/python/egret_client.py")
EGRET = os.path.join(ROOT, "build/egret")  # --egret PATH overrides
TMP = None
pb = None  # egret_pb2
hpb = None  # health_pb2
RPC_TIMEOUT = 60  # seconds, for every call: a hang fails instead of blocking the test


def read(path):
    with open(path, "rb") as f:
        return f.read()


def expected_caption(name):
    with open(os.path.join(EXAMPLES, "captions.tsv"), encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if fields[0] == name:
                return fields[1]
    raise AssertionError("%s is not in examples/captions.tsv" % name)


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix="egret-py-")
    try:
        generate_messages()
    except BaseException:
        tearDownModule()  # unittest skips it when setUpModule fails
        raise


def generate_messages():
    global pb, hpb
    if not os.access(EGRET, os.X_OK):
        raise AssertionError("no egret binary at %s (give --egret PATH)" % EGRET)
    if shutil.which("protoc") is None:
        raise AssertionError("protoc not found: install protobuf-compiler")
    # The generated modules are loaded by path: TMP/grpc/... must not shadow the grpc package.
    proc = subprocess.run(["protoc", "--python_out=" + TMP, "-I", "proto",
                           "proto/egret/v1/egret.proto", "proto/grpc/health/v1/health.proto"],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError("protoc failed (%d): %s" % (proc.returncode, proc.stderr))
    pb = load_module("egret_pb2", os.path.join(TMP, "egret/v1/egret_pb2.py"))
    hpb = load_module("health_pb2", os.path.join(TMP, "grpc/health/v1/health_pb2.py"))


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


# ---- calling methods by path ----

def method(channel, path, request_cls, response_cls, stream=False):
    make = channel.unary_stream if stream else channel.unary_unary
    return make(path, request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString)


def generate(channel, req, **kw):
    return method(channel, "/egret.v1.Egret/Generate", pb.GenerateRequest,
                  pb.GenerateResponse)(req, timeout=kw.pop("timeout", RPC_TIMEOUT), **kw)


def generate_stream(channel, req, **kw):
    """The call object: iterate it for the messages; call.cancel() cancels."""
    return method(channel, "/egret.v1.Egret/GenerateStream", pb.GenerateRequest,
                  pb.GenerateResponse, stream=True)(req, timeout=kw.pop("timeout", RPC_TIMEOUT),
                                                    **kw)


def model_info(channel, **kw):
    return method(channel, "/egret.v1.Egret/GetModelInfo", pb.GetModelInfoRequest,
                  pb.ModelInfo)(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT, **kw)


def health_check(channel, service="", timeout=RPC_TIMEOUT):
    return method(channel, "/grpc.health.v1.Health/Check", hpb.HealthCheckRequest,
                  hpb.HealthCheckResponse)(hpb.HealthCheckRequest(service=service),
                                           timeout=timeout)


def health_watch(channel, service=""):
    return method(channel, "/grpc.health.v1.Health/Watch", hpb.HealthCheckRequest,
                  hpb.HealthCheckResponse, stream=True)(hpb.HealthCheckRequest(service=service),
                                                        timeout=RPC_TIMEOUT)


def status_name(value):
    return hpb.HealthCheckResponse.ServingStatus.Name(value)


# A client for test_8_client_killed, run as its own process: streams a long answer, says so
# after the first message, and keeps reading until it is killed.
KILLED_CLIENT = r'''
import importlib.util, os, sys, grpc
spec = importlib.util.spec_from_file_location("egret_pb2", os.path.join(sys.argv[1], "egret/v1/egret_pb2.py"))
pb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pb)
req = pb.GenerateRequest(max_new_tokens=1000, ignore_eos=True)
req.parts.add(image=open(sys.argv[3], "rb").read())
call = grpc.insecure_channel(sys.argv[2]).unary_stream(
    "/egret.v1.Egret/GenerateStream", request_serializer=pb.GenerateRequest.SerializeToString,
    response_deserializer=pb.GenerateResponse.FromString)(req, timeout=600)
for i, m in enumerate(call):
    if i == 0:
        print("streaming", flush=True)
'''


def caption_request(path, **fields):
    req = pb.GenerateRequest(use_template=True, **fields)
    req.parts.add(image=read(path))
    return req


def long_request(n):
    """Exactly n tokens (ignore_eos), no template: the image and nothing else."""
    req = pb.GenerateRequest(max_new_tokens=n, ignore_eos=True)
    req.parts.add(image=read(os.path.join(SHAPES, "c000_0.png")))
    return req


def free_port():
    """egret serve does not report the port it bound for :0, so pick one first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """In the child: SIGKILL it if this test dies (a ctest timeout), so no server is left over."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """`egret serve ARGS` as a subprocess, its stderr in a file."""

    def __init__(self, name, args):
        self.stderr_path = os.path.join(TMP, name + ".stderr")
        self.stderr_file = open(self.stderr_path, "wb")
        # no warm-up: its effect is tested by test_warmup and test_metrics.py
        self.cmd = [EGRET, "serve", "--no-warmup"] + args
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr_file,
                                     preexec_fn=die_with_parent)

    def stderr(self):
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_serving(self, new_channel, timeout=90):
        """Polls health Check (a new channel each time: no reconnect backoff) until SERVING."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("%s exited with code %d before serving; its stderr:\n%s" %
                                     (" ".join(self.cmd), rc, self.stderr()))
            channel = new_channel()
            try:
                status = health_check(channel, timeout=2).status
                if status == hpb.HealthCheckResponse.SERVING:
                    return
                last = "health status " + status_name(status)
            except grpc.RpcError as e:
                last = "%s: %s" % (e.code().name, e.details())
            finally:
                channel.close()
            if time.monotonic() > deadline:
                raise AssertionError("%s not SERVING after %d s (%s); its stderr:\n%s" %
                                     (" ".join(self.cmd), timeout, last, self.stderr()))
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr_file.close()


def concat(messages):
    text = "".join(m.text for m in messages)
    ids = [i for m in messages for i in m.token_ids]
    return text, ids


class UnixServerTest(unittest.TestCase):
    """One server on a unix socket; the last test (test_9_sigterm) drains it with SIGTERM."""

    @classmethod
    def setUpClass(cls):
        cls.addr = "unix:" + os.path.join(TMP, "egret.sock")
        cls.server = Server("unix", ["--listen", cls.addr, "--grace", "20"])
        cls.egret_calls = 0  # calls to egret.v1.Egret the server accepted: one log line each
        cls.ran = set()
        try:
            cls.server.wait_serving(lambda: grpc.insecure_channel(cls.addr))
        except BaseException:
            cls.server.stop()
            raise
        cls.channel = grpc.insecure_channel(cls.addr)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def call(self, fn, *args, **kw):
        type(self).egret_calls += 1
        return fn(*args, **kw)

    def assert_rpc_error(self, code, needle, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError, msg="expected %s" % code.name) as cm:
            r = self.call(fn, *args, **kw)
            if not isinstance(r, pb.GenerateResponse):
                list(r)  # a stream: its status comes at the end
        e = cm.exception
        self.assertEqual(e.code(), code, "status %s (%s), want %s" %
                         (e.code().name, e.details(), code.name))
        if needle:
            self.assertIn(needle, e.details(), "the message should mention %r" % needle)

    def test_1_health(self):
        for service in ("", "egret.v1.Egret"):
            r = health_check(self.channel, service)
            self.assertEqual(status_name(r.status), "SERVING", "health of %r" % service)
        with self.assertRaises(grpc.RpcError) as cm:
            health_check(self.channel, "no.such.Service")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND,
                         "health of an unknown service: %s" % cm.exception.details())
        watch = health_watch(self.channel)
        try:
            first = next(watch)
            self.assertEqual(status_name(first.status), "SERVING", "Watch's first message")
        finally:
            watch.cancel()

    def test_2_model_info(self):
        info = self.call(model_info, self.channel)
        self.assertEqual(info.name, "shapes-idefics")
        self.assertEqual(info.architecture, "IdeficsForVisionText2Text")
        self.assertEqual(info.image_size, 64)
        self.assertEqual(info.vocab_size, 477)
        self.assertEqual(list(info.template_stop), ["\n"])
        self.assertIn("Output: {text}", info.prompt_template)
        self.assertIn(info.precision, ("fp16", "fp32"))
        self.assertTrue(info.device, "device is empty")
        self.assertTrue(info.HasField("limits"), "no limits")
        lim = info.limits
        for field in ("max_request_bytes", "max_images", "max_image_pixels", "max_image_side",
                      "context_length", "max_new_tokens", "default_max_new_tokens", "max_queue",
                      "max_request_pixels", "decode_workers"):
            self.assertGreater(getattr(lim, field), 0, "limits.%s" % field)
        self.assertLessEqual(lim.default_max_new_tokens, lim.max_new_tokens)
        self.assertEqual(lim.max_request_pixels, 4 * lim.max_image_pixels)

    def test_3_caption_unary_and_stream(self):
        image = os.path.join(EXAMPLES, "scene-002.png")
        want = expected_caption("scene-002.png")
        req = caption_request(image)
        r = self.call(generate, self.channel, req)
        self.assertEqual(r.text, want, "zero-shot caption of scene-002.png")
        self.assertEqual(r.finish_reason, pb.FINISH_REASON_STOP,
                         pb.FinishReason.Name(r.finish_reason))
        self.assertTrue(r.HasField("usage"), "unary answer without usage")
        u = r.usage
        self.assertEqual(u.images, 1)
        self.assertGreater(u.prompt_tokens, 0)
        self.assertEqual(u.generated_tokens, len(r.token_ids))
        self.assertGreater(len(r.token_ids), 1)
        self.assertGreater(u.total_s, 0)
        self.assertGreater(u.time_to_first_token_s, 0)
        self.assertLessEqual(u.time_to_first_token_s, u.total_s)
        self.assertGreaterEqual(u.queue_s, 0)

        messages = list(self.call(generate_stream, self.channel, req))
        self.assertGreaterEqual(len(messages), 2, "the stream came in %d message(s)" %
                                len(messages))
        text, ids = concat(messages)
        self.assertEqual(text, r.text, "streamed text")
        self.assertEqual(ids, list(r.token_ids), "streamed token ids")
        for i, m in enumerate(messages[:-1]):
            self.assertEqual(m.finish_reason, pb.FINISH_REASON_UNSPECIFIED,
                             "message %d of %d has a finish_reason" % (i, len(messages)))
            self.assertFalse(m.HasField("usage"),
                             "message %d of %d has usage" % (i, len(messages)))
        last = messages[-1]
        self.assertEqual(last.finish_reason, pb.FINISH_REASON_STOP)
        self.assertTrue(last.HasField("usage"), "the last message has no usage")
        self.assertEqual(last.usage.generated_tokens, len(ids))
        self.assertEqual(last.usage.prompt_tokens, u.prompt_tokens)

    def test_4_few_shot(self):
        imgs = [read(os.path.join(SHAPES, "c013_%d.png" % i)) for i in range(3)]
        req = pb.GenerateRequest(max_new_tokens=16)
        req.examples.add(image=imgs[0], text="red.")
        req.examples.add(image=imgs[1], text="yellow.")
        req.parts.add(image=imgs[2])
        shot = self.call(generate, self.channel, req)
        self.assertEqual(shot.text, "white.", "few-shot answer (tests/data/shapes-cases case 13)")
        self.assertEqual(shot.finish_reason, pb.FINISH_REASON_STOP)
        self.assertEqual(shot.usage.images, 3)

        spelled = pb.GenerateRequest(max_new_tokens=16, stop=["\n"])
        for part in ({"image": imgs[0]}, {"text": "Output: red.\n"}, {"image": imgs[1]},
                     {"text": "Output: yellow.\n"}, {"image": imgs[2]}, {"text": "Output:"}):
            spelled.parts.add(**part)
        parts = self.call(generate, self.channel, spelled)
        self.assertEqual(list(parts.token_ids), list(shot.token_ids),
                         "examples %r vs the same prompt as parts %r" % (shot.text, parts.text))
        self.assertEqual(parts.text, shot.text)
        self.assertEqual(parts.usage.prompt_tokens, shot.usage.prompt_tokens)

    def test_4b_compressed(self):
        """grpcio's gzip: answered as uncompressed; one inflating past the request limit is
        refused with the limit named (the server inflates within it, tests/test_request_memory.c
        measures the memory)."""
        name = "scene-002.png"
        r = self.call(generate, self.channel, caption_request(os.path.join(EXAMPLES, name)),
                      compression=grpc.Compression.Gzip)
        self.assertEqual(r.text, expected_caption(name))
        bomb = pb.GenerateRequest(max_new_tokens=4)
        bomb.parts.add(image=bytes(80 << 20))  # 80 MiB of zeros: about 80 KiB gzip'd
        self.assert_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_request_bytes", generate,
                              self.channel, bomb, compression=grpc.Compression.Gzip)

    def test_5_bad_requests(self):
        bad_image = pb.GenerateRequest(max_new_tokens=4)
        bad_image.parts.add(image=b"this is not an image")
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "image 0", generate,
                              self.channel, bad_image)
        nan = caption_request(os.path.join(EXAMPLES, "scene-001.png"),
                              max_new_tokens=4, temperature=math.nan)
        self.assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "temperature", generate_stream,
                              self.channel, nan)
        too_many = caption_request(os.path.join(EXAMPLES, "scene-001.png"), max_new_tokens=100000)
        self.assert_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_new_tokens", generate,
                              self.channel, too_many)
        # The server still answers.
        r = self.call(generate, self.channel, caption_request(os.path.join(EXAMPLES,
                                                                           "scene-001.png")))
        self.assertEqual(r.text, expected_caption("scene-001.png"))

    def test_6_cancel_stream(self):
        type(self).ran.add("test_6_cancel_stream")
        call = self.call(generate_stream, self.channel, long_request(300))
        got = []
        for m in call:
            got.append(m)
            if len(got) == 2:
                call.cancel()
                break
        self.assertEqual(len(got), 2)
        self.assertEqual(call.code(), grpc.StatusCode.CANCELLED)
        # The next request is served normally (and promptly: the cancelled one stopped).
        t0 = time.monotonic()
        r = self.call(generate, self.channel, caption_request(os.path.join(EXAMPLES,
                                                                           "scene-002.png")))
        self.assertEqual(r.text, expected_caption("scene-002.png"))
        self.assertLess(r.usage.queue_s, 5.0, "the cancelled request kept the engine busy")
        self.assertLess(time.monotonic() - t0, 30)

    def test_7_example_client(self):
        """examples/python/egret_client.py: caption, few-shot and --stream."""
        def run(*args):
            type(self).egret_calls += 1
            p = subprocess.run([sys.executable, CLIENT, "--server", self.addr] + list(args),
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, "egret_client.py %s: rc %d, stderr:\n%s" %
                             (" ".join(args), p.returncode, p.stderr))
            return p.stdout.strip()

        scene = os.path.join(EXAMPLES, "scene-002.png")
        self.assertEqual(run(scene), expected_caption("scene-002.png"))
        c = [os.path.join(SHAPES, "c013_%d.png" % i) for i in range(3)]
        self.assertEqual(run("--example", c[0], "red.", "--example", c[1], "yellow.",
                             "--stream", c[2]), "white.")

    def test_7b_example_sets(self):
        """examples/python/example_sets.py: a set registered, then asked by id, gives the
        few-shot answer; by id and inline give the same tokens."""
        c = [os.path.join(SHAPES, "c013_%d.png" % i) for i in range(3)]
        type(self).egret_calls += 2  # CreateExampleSet, Generate
        p = subprocess.run([sys.executable, os.path.join(ROOT, "examples/python/example_sets.py"),
                            "--server", self.addr, "--example", c[0], "red.", "--example", c[1],
                            "yellow.", c[2]], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, "example_sets.py: rc %d, stderr:\n%s" %
                         (p.returncode, p.stderr))
        self.assertEqual(p.stdout.strip(), c[2] + ": white.")
        set_id = p.stderr.split()[2].rstrip(":")
        imgs = [read(x) for x in c]
        by_id = pb.GenerateRequest(max_new_tokens=16, example_set=set_id)
        by_id.parts.add(image=imgs[2])
        inline = pb.GenerateRequest(max_new_tokens=16)
        inline.examples.add(image=imgs[0], text="red.")
        inline.examples.add(image=imgs[1], text="yellow.")
        inline.parts.add(image=imgs[2])
        a, b = self.call(generate, self.channel, by_id), self.call(generate, self.channel, inline)
        self.assertEqual(list(a.token_ids), list(b.token_ids))
        self.assertLess(by_id.ByteSize(), inline.ByteSize() / 2)

    def test_8_client_killed(self):
        """A client process killed mid-stream (no cancel, the connection just drops): the
        server stops its work, the in-flight count returns to zero, the next request is served."""
        type(self).ran.add("test_8_client_killed")
        type(self).egret_calls += 1
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, TMP, self.addr, os.path.join(SHAPES, "c000_0.png")],
            stdout=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline()
            self.assertEqual(line.strip(), "streaming", "the child client never got a message")
            child.kill()
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
        stats = method(self.channel, "/egret.v1.Egret/GetStats", pb.GetStatsRequest,
                       pb.ServerStats)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = stats(pb.GetStatsRequest(), timeout=RPC_TIMEOUT)
            if st.in_flight == 0 and st.running == 0 and st.queued == 0:
                break
            time.sleep(0.05)
        self.assertEqual((st.in_flight, st.running, st.queued), (0, 0, 0),
                         "the killed client's request is still on the server")
        r = self.call(generate, self.channel, caption_request(os.path.join(EXAMPLES,
                                                                           "scene-002.png")))
        self.assertEqual(r.text, expected_caption("scene-002.png"))

    def test_9_sigterm(self):
        """Drain: calls in flight finish, health says NOT_SERVING, new calls are refused, exit 0."""
        server = self.server
        watch_channel = grpc.insecure_channel(self.addr)
        early = grpc.insecure_channel(self.addr)
        health_check(early)  # connected before SIGTERM
        statuses, not_serving = [], threading.Event()
        watch_error = []

        def watch():
            try:
                for m in health_watch(watch_channel):
                    statuses.append(status_name(m.status))
                    if m.status == hpb.HealthCheckResponse.NOT_SERVING:
                        not_serving.set()
            except grpc.RpcError as e:
                watch_error.append("%s: %s" % (e.code().name, e.details()))

        n_tokens = 30
        first_message = threading.Event()
        results = [None, None]

        def stream(k):
            channel = grpc.insecure_channel(self.addr)
            messages = []
            try:
                call = generate_stream(channel, long_request(n_tokens))
                for m in call:
                    messages.append(m)
                    first_message.set()
                results[k] = (call.code(), "", messages)
            except grpc.RpcError as e:
                results[k] = (e.code(), e.details(), messages)
            finally:
                channel.close()

        threads = [threading.Thread(target=watch, daemon=True)]
        threads[0].start()
        try:
            for k in range(2):
                type(self).egret_calls += 1
                threads.append(threading.Thread(target=stream, args=(k,), daemon=True))
                threads[-1].start()
            self.assertTrue(first_message.wait(RPC_TIMEOUT), "no streamed message arrived")
            sent = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            self.assertTrue(not_serving.wait(10), "health Watch never said NOT_SERVING (saw %s%s)"
                            % (statuses, watch_error))
            self.assertEqual(statuses[0], "SERVING", "Watch's first message")
            # The replica leaves its balancer while the calls in flight finish: the listening
            # socket is gone (a new channel cannot connect) and the channel connected before
            # SIGTERM is told GOAWAY (it leaves READY), so new calls on either fail UNAVAILABLE
            # in the client without reaching the server (no log line).
            left_ready = threading.Event()

            def on_state(state):
                if state != grpc.ChannelConnectivity.READY:
                    left_ready.set()

            early.subscribe(on_state)
            self.assertTrue(left_ready.wait(10), "no GOAWAY on a channel connected before SIGTERM")
            early.unsubscribe(on_state)
            self.assertIsNone(server.proc.poll(), "egret serve exited with calls in flight")
            late = grpc.insecure_channel(self.addr)
            try:
                for name, channel in (("a new channel", late), ("a connected channel", early)):
                    with self.assertRaises(grpc.RpcError, msg=name) as cm:
                        generate(channel, caption_request(os.path.join(EXAMPLES,
                                                                       "scene-002.png")),
                                 timeout=10)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                                     "a call after SIGTERM on %s: %s" %
                                     (name, cm.exception.details()))
            finally:
                late.close()
            for t in threads[1:]:
                t.join(RPC_TIMEOUT)
                self.assertFalse(t.is_alive(), "an in-flight stream never ended")
            for k, (code, details, messages) in enumerate(results):
                self.assertEqual(code, grpc.StatusCode.OK,
                                 "in-flight call %d: %s %s after %d tokens; server log:\n%s" %
                                 (k, code.name, details, len(concat(messages)[1]),
                                  server.stderr()))
                _, ids = concat(messages)
                self.assertEqual(len(ids), n_tokens, "in-flight call %d got %d tokens" %
                                 (k, len(ids)))
                self.assertEqual(messages[-1].finish_reason, pb.FINISH_REASON_LENGTH)
                self.assertEqual(messages[-1].usage.generated_tokens, n_tokens)
            try:
                rc = server.proc.wait(max(0.1, 20 - (time.monotonic() - sent)))
            except subprocess.TimeoutExpired:
                self.fail("egret serve still running 20 s (the grace period) after SIGTERM; "
                          "stderr:\n" + server.stderr())
            self.assertEqual(rc, 0, "egret serve exit code; stderr:\n" + server.stderr())
            threads[0].join(5)
        finally:
            watch_channel.close()
            early.close()
        log = server.stderr()
        lines = re.findall(r"^egret: request (\d+) (\S+) .*status=(\S+) .*generated=(\d+)", log,
                           re.M)
        ids = [int(n) for n, _, _, _ in lines]
        self.assertEqual(len(ids), len(set(ids)), "request ids logged twice:\n" + log)
        self.assertEqual(len(lines), self.egret_calls,
                         "%d Egret calls made, %d request log lines:\n%s" %
                         (self.egret_calls, len(lines), log))
        drained = [l for l in lines[-2:] if l[1] == "GenerateStream" and l[2] == "OK" and
                   int(l[3]) == n_tokens]
        self.assertEqual(len(drained), 2, "the two drained calls' log lines:\n" + log)
        cancelled = [l for l in lines if l[1] == "GenerateStream" and l[2] == "CANCELLED"]
        want = len({"test_6_cancel_stream", "test_8_client_killed"} & type(self).ran)
        self.assertEqual(len(cancelled), want, "the cancelled streams' log lines:\n" + log)
        if "test_6_cancel_stream" in type(self).ran:  # it ran first: the first such line
            self.assertLessEqual(int(cancelled[0][3]), 10, "the cancelled stream kept generating")
        self.assertIn("egret: draining", log)
        self.assertIn("egret: drained", log)


class TlsApiKeyTest(unittest.TestCase):
    """A TCP server with TLS (a throwaway self-signed certificate) and an API key."""

    KEY = "py-test-key-0123456789"

    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise AssertionError("openssl not found: install it (scripts/install-deps.sh)")
        cls.cert = os.path.join(TMP, "cert.pem")
        cls.tls_key = os.path.join(TMP, "key.pem")
        p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                            "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                            "-keyout", cls.tls_key, "-out", cls.cert],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise AssertionError("openssl req failed (%d): %s" % (p.returncode, p.stderr))
        cls.key_file = os.path.join(TMP, "api-key.txt")
        with open(cls.key_file, "w") as f:
            f.write(cls.KEY + "\n")
        cls.wrong_key_file = os.path.join(TMP, "wrong-key.txt")
        with open(cls.wrong_key_file, "w") as f:
            f.write("not-the-key\n")
        cls.port = free_port()
        cls.target = "127.0.0.1:%d" % cls.port
        cls.server = Server("tls", ["--listen", cls.target, "--tls-cert", cls.cert,
                                    "--tls-key", cls.tls_key, "--api-key-file", cls.key_file])
        try:
            cls.server.wait_serving(cls.secure_channel)
        except BaseException:
            cls.server.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    @classmethod
    def secure_channel(cls):
        creds = grpc.ssl_channel_credentials(root_certificates=read(cls.cert))
        # The certificate names localhost (and 127.0.0.1): check the DNS name.
        return grpc.secure_channel(cls.target, creds,
                                   options=[("grpc.ssl_target_name_override", "localhost")])

    def test_python_client(self):
        req = caption_request(os.path.join(EXAMPLES, "scene-002.png"))
        channel = self.secure_channel()
        try:
            r = generate(channel, req, metadata=[("authorization", "Bearer " + self.KEY)])
            self.assertEqual(r.text, expected_caption("scene-002.png"))
            with self.assertRaises(grpc.RpcError) as cm:
                generate(channel, req, metadata=[("authorization", "Bearer wrong")])
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED,
                             cm.exception.details())
            with self.assertRaises(grpc.RpcError) as cm:
                model_info(channel)  # no key at all
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED,
                             cm.exception.details())
            # Health checks need no key (load balancers do not have it).
            self.assertEqual(status_name(health_check(channel).status), "SERVING")
        finally:
            channel.close()
        plain = grpc.insecure_channel(self.target)
        try:
            with self.assertRaises(grpc.RpcError, msg="plaintext to a TLS port") as cm:
                health_check(plain, timeout=10)
            self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAVAILABLE,
                                                grpc.StatusCode.INTERNAL,
                                                grpc.StatusCode.DEADLINE_EXCEEDED))
        finally:
            plain.close()

    def test_c_client(self):
        """`egret caption` over TLS with the key file; a wrong key exits non-zero."""
        image = os.path.join(EXAMPLES, "scene-002.png")

        def caption(key_file):
            return subprocess.run([EGRET, "caption", "--server", self.target, "--tls-ca",
                                   self.cert, "--api-key-file", key_file, image],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)

        p = caption(self.key_file)
        self.assertEqual(p.returncode, 0, "egret caption: rc %d, stderr:\n%s" %
                         (p.returncode, p.stderr))
        self.assertEqual(p.stdout.strip(), expected_caption("scene-002.png"))
        p = caption(self.wrong_key_file)
        self.assertNotEqual(p.returncode, 0, "egret caption with a wrong key succeeded: " +
                            p.stdout)
        self.assertIn("API key", p.stderr)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--egret" in args:
        i = args.index("--egret")
        if i + 1 >= len(args):
            sys.exit("test_grpc_python.py: --egret needs a PATH")
        EGRET = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    os.chdir(ROOT)
    unittest.main(argv=[sys.argv[0]] + args, verbosity=2)
