#!/usr/bin/env python3
"""Few-shot prompting with an example set: register the pairs once, then ask by id.

An example set's id is a hash of its pairs and the model, so every replica serving the same model
gives the same id. Two ways to use sets behind a load balancer (docs/service.md), both here:
  - register on all: --server once per replica (their own addresses, not the balancer's);
  - re-register on NOT_FOUND: a replica that restarted without --example-sets-dir, or was added
    later, answers NOT_FOUND; create the set there (through the balancer: creating is
    idempotent) and retry.

    ./build/egret serve &
    I=tests/data/shapes-cases/images
    python3 examples/python/example_sets.py --example $I/c001_0.png yellow. \\
        --example $I/c001_1.png orange. $I/c001_2.png $I/c002_2.png
    # example set 3f1c...: 2 pairs, 12 prefix tokens (created)
    # tests/data/shapes-cases/images/c001_2.png: blue.
    # ...

Needs what egret_client.py needs (grpcio, protobuf, protoc). Options: --server ADDR
(repeatable; the first one answers the queries), --api-key KEY (or EGRET_API_KEY).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egret_client import grpc, load_messages  # noqa: E402


class Egret:
    """The example set methods and Generate of one server, without generated stubs."""

    def __init__(self, pb, address, api_key=None):
        self.pb = pb
        self.channel = grpc.insecure_channel(address)
        self.metadata = [("authorization", "Bearer " + api_key)] if api_key else None

        def method(name, request, response):
            return self.channel.unary_unary("/egret.v1.Egret/" + name,
                                            request_serializer=request.SerializeToString,
                                            response_deserializer=response.FromString)
        self._create = method("CreateExampleSet", pb.CreateExampleSetRequest, pb.ExampleSet)
        self._generate = method("Generate", pb.GenerateRequest, pb.GenerateResponse)

    def create_set(self, pairs):
        req = self.pb.CreateExampleSetRequest()
        for image, text in pairs:
            req.examples.add(image=image, text=text)
        return self._create(req, metadata=self.metadata, timeout=60)

    def ask(self, set_id, pairs, image, max_new_tokens=0):
        """The answer for image after the set; re-registers the set where it is unknown."""
        req = self.pb.GenerateRequest(example_set=set_id, max_new_tokens=max_new_tokens)
        req.parts.add(image=image)
        try:
            return self._generate(req, metadata=self.metadata, timeout=300)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
        again = self.create_set(pairs)  # the same pairs make the same id
        assert again.id == set_id, (again.id, set_id)
        return self._generate(req, metadata=self.metadata, timeout=300)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", help="query images")
    ap.add_argument("--server", action="append", help="a replica (repeat for each)")
    ap.add_argument("--example", nargs=2, action="append", required=True,
                    metavar=("IMAGE", "TEXT"), help="a few-shot pair; repeat it")
    ap.add_argument("--api-key", default=os.environ.get("EGRET_API_KEY"))
    args = ap.parse_args()
    pb = load_messages()
    pairs = []
    for path, text in args.example:
        with open(path, "rb") as f:
            pairs.append((f.read(), text))
    replicas = [Egret(pb, s, args.api_key) for s in (args.server or ["127.0.0.1:50051"])]
    try:
        set_id = None
        for r in replicas:  # register on all: every one answers with the same id
            s = r.create_set(pairs)
            if set_id is not None and s.id != set_id:
                sys.exit(f"example_sets.py: replicas disagree on the id ({s.id} != {set_id}): "
                         "are they serving the same model?")
            set_id = s.id
            print(f"example set {s.id}: {s.pair_count} pairs, {s.prefix_tokens} prefix tokens "
                  f"({'created' if s.created else 'already held'})", file=sys.stderr)
        for path in args.images:
            with open(path, "rb") as f:
                reply = replicas[0].ask(set_id, pairs, f.read())
            print(f"{path}: {reply.text}")
    except grpc.RpcError as e:
        sys.exit(f"example_sets.py: {e.code().name}: {e.details()}")
    finally:
        for r in replicas:
            r.channel.close()


if __name__ == "__main__":
    main()
