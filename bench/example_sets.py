#!/usr/bin/env python3
"""Example sets against a running `egret serve` (docs/service.md, "Example sets"): what a request
by id costs next to a zero-shot request and to the same pairs sent inline.

    ./build/egret serve --listen unix:/tmp/egret.sock &
    python3 bench/example_sets.py --server unix:/tmp/egret.sock ttft --pairs 15 --rounds 12
    python3 bench/example_sets.py --server unix:/tmp/egret.sock soak --seconds 60 &
    ./build/egret loadtest --server unix:/tmp/egret.sock --duration 60

ttft: registers a set of --pairs pairs (shapes-world scenes drawn by `egret draw`, with their
colour answers), then per round asks about a new scene three ways, in turn: zero-shot (the
template, no pairs), by the set's id, and with the pairs inline. Prints the server's time to first
token (usage.time_to_first_token_s: queueing excluded) as medians, the request sizes, and the
ratios. Every query is a scene no cache has seen (one per request), so each request encodes one image.

soak: registers a set, then sends requests by id (new scenes) for --seconds while other traffic
(the load test) runs, and checks at the end that the set's hits equal its uses (never evicted)
and that the sets' memory stayed within --example-sets-mb, their pinned device memory within
what they were charged (GetStats, polled each second).

Needs grpcio and protobuf (Debian: python3-grpcio python3-protobuf) and protoc; stdlib besides.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
from egret_client import grpc, load_messages  # noqa: E402


def draw(count, seed):
    """count scenes as (png bytes, colour answer or caption)."""
    out = tempfile.mkdtemp(prefix="egret-sets-bench-")
    subprocess.run([os.path.join(ROOT, "build", "egret"), "draw", "--out", out, "--count",
                    str(count), "--seed", str(seed), "--objects", "1"], check=True,
                   stdout=subprocess.DEVNULL)
    scenes = []
    with open(os.path.join(out, "scenes.tsv")) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            with open(os.path.join(out, row["file"]), "rb") as img:
                scenes.append((img.read(), row.get("color") or row.get("caption")))
    return scenes


class Server:
    def __init__(self, pb, address):
        self.pb = pb
        self.channel = grpc.insecure_channel(address)

        def method(name, req, resp):
            return self.channel.unary_unary("/egret.v1.Egret/" + name,
                                            request_serializer=req.SerializeToString,
                                            response_deserializer=resp.FromString)
        self.create = method("CreateExampleSet", pb.CreateExampleSetRequest, pb.ExampleSet)
        self.get = method("GetExampleSet", pb.GetExampleSetRequest, pb.ExampleSet)
        self.list = method("ListExampleSets", pb.ListExampleSetsRequest,
                           pb.ListExampleSetsResponse)
        self.generate = method("Generate", pb.GenerateRequest, pb.GenerateResponse)
        self.stats = method("GetStats", pb.GetStatsRequest, pb.ServerStats)

    def register(self, pairs):
        req = self.pb.CreateExampleSetRequest()
        for image, text in pairs:
            req.examples.add(image=image, text=text)
        s = self.create(req, timeout=120)
        # the warm-up request runs on the engine: wait until the set is ready
        while not self.get(self.pb.GetExampleSetRequest(id=s.id), timeout=30).ready:
            time.sleep(0.1)
        return s


def ttft(args, pb, srv):
    scenes = draw(args.pairs + 3 * args.rounds, args.seed)
    pairs, queries = scenes[:args.pairs], iter(scenes[args.pairs:])
    s = srv.register(pairs)
    print(f"set {s.id}: {s.pair_count} pairs, {s.prefix_tokens} prefix tokens, {s.bytes} bytes")
    times = {"zero-shot": [], "by id": [], "inline": []}
    sizes, pair_bytes = {}, {}
    for _ in range(args.rounds):
        for kind in times:
            image = next(queries)[0]  # a scene of its own: no kind finds another's query cached
            req = pb.GenerateRequest(max_new_tokens=4)
            if kind == "zero-shot":
                req.use_template = True
            elif kind == "by id":
                req.example_set = s.id
            else:
                for p_image, p_text in pairs:
                    req.examples.add(image=p_image, text=p_text)
            req.parts.add(image=image)
            sizes[kind] = len(req.SerializeToString())
            # what stands for the pairs: the id, or the examples (each field with its tag and length)
            pair_bytes[kind] = (len(pb.GenerateRequest(example_set=req.example_set).SerializeToString())
                                + len(pb.GenerateRequest(examples=req.examples).SerializeToString()))
            reply = srv.generate(req, timeout=300)
            times[kind].append(reply.usage.time_to_first_token_s)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in times:
        print(f"{k:10s} ttft median {med[k] * 1000:7.1f} ms (min {min(times[k]) * 1000:.1f}, "
              f"max {max(times[k]) * 1000:.1f}, n={len(times[k])}), request {sizes[k]} bytes")
    print(f"by id / zero-shot ttft: {med['by id'] / med['zero-shot']:.2f}x; "
          f"inline / zero-shot: {med['inline'] / med['zero-shot']:.2f}x")
    print(f"request bytes by id / inline: {100.0 * sizes['by id'] / sizes['inline']:.3f}% "
          f"(each carries the query image); the pairs' part: {pair_bytes['by id']} / "
          f"{pair_bytes['inline']} bytes = "
          f"{100.0 * pair_bytes['by id'] / pair_bytes['inline']:.3f}%")
    after = srv.get(pb.GetExampleSetRequest(id=s.id), timeout=30)
    print(f"set uses {after.uses}, hits {after.hits}")


def soak(args, pb, srv):
    scenes = draw(args.pairs + 200, args.seed)
    pairs, queries = scenes[:args.pairs], scenes[args.pairs:]
    s = srv.register(pairs)
    budget = args.example_sets_mb << 20
    worst = [0, 0]  # bytes charged to the sets, device bytes they pinned
    stop = time.time() + args.seconds
    answered = [0]

    def watch():
        while time.time() < stop:
            st = srv.stats(pb.GetStatsRequest(), timeout=30)
            worst[0] = max(worst[0], st.example_set_bytes)
            worst[1] = max(worst[1], st.example_set_device_bytes)
            time.sleep(1)

    def ask(k):
        i = k
        while time.time() < stop:
            req = pb.GenerateRequest(example_set=s.id, max_new_tokens=4)
            req.parts.add(image=queries[i % len(queries)][0])
            srv.generate(req, timeout=300)
            answered[0] += 1
            i += args.clients
    threads = [threading.Thread(target=watch)] + [
        threading.Thread(target=ask, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = srv.get(pb.GetExampleSetRequest(id=s.id), timeout=30)
    ok = after.uses == after.hits == answered[0] and worst[1] <= worst[0] <= budget
    print(f"{answered[0]} requests by id in {args.seconds} s: set uses {after.uses}, hits "
          f"{after.hits}; sets charged at most {worst[0]} bytes of a {budget}-byte budget, "
          f"pinned at most {worst[1]} bytes of device memory: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=7)
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("ttft")
    t.add_argument("--rounds", type=int, default=12)
    k = sub.add_parser("soak")
    k.add_argument("--seconds", type=int, default=60)
    k.add_argument("--clients", type=int, default=2)
    k.add_argument("--example-sets-mb", type=int, default=512, help="the server's setting")
    args = ap.parse_args()
    pb = load_messages()
    srv = Server(pb, args.server)
    try:
        return ttft(args, pb, srv) if args.mode == "ttft" else soak(args, pb, srv)
    finally:
        srv.channel.close()


if __name__ == "__main__":
    sys.exit(main() or 0)
