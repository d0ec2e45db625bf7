#!/usr/bin/env python3
"""Captions images, or answers a few-shot prompt, with a running `egret serve` from Python.

Needs grpcio, protobuf and protoc (Debian: apt install python3-grpcio python3-protobuf
protobuf-compiler). No generated code is checked in: the message classes are generated from
proto/egret/v1/egret.proto at start-up, into a temporary folder, with
    protoc --python_out=DIR -I proto proto/egret/v1/egret.proto

    ./build/egret serve &                      # listens on 127.0.0.1:50051
    python3 examples/python/egret_client.py examples/scene-002.png
    # a small red diamond in the center.
    I=tests/data/shapes-cases/images
    python3 examples/python/egret_client.py --example $I/c001_0.png yellow. \\
        --example $I/c001_1.png orange. --stream $I/c001_2.png
    # blue.

Options: --server ADDR (host:port or unix:/path), --prompt TEXT, --max-new-tokens N,
--api-key KEY (or EGRET_API_KEY), --tls-ca PEM (TLS, trusting these roots).
"""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import grpc
except ImportError:
    sys.exit("egret_client.py: needs grpcio (Debian: apt install python3-grpcio; "
             "then run it with /usr/bin/python3)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_messages():
    """Generates egret_pb2 from the .proto with protoc and imports it."""
    out = tempfile.mkdtemp(prefix="egret-proto-")
    try:
        subprocess.run(["protoc", "--python_out=" + out, "-I", os.path.join(ROOT, "proto"),
                        os.path.join(ROOT, "proto/egret/v1/egret.proto")], check=True)
        path = os.path.join(out, "egret/v1/egret_pb2.py")
        spec = importlib.util.spec_from_file_location("egret_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", help="the image to caption (the query, with --example)")
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--example", nargs=2, action="append", default=[], metavar=("IMAGE", "TEXT"),
                    help="a few-shot pair; repeat it")
    ap.add_argument("--prompt", help="text after the query image's prefix")
    ap.add_argument("--max-new-tokens", type=int, default=0)
    ap.add_argument("--stream", action="store_true", help="print the answer as it comes")
    ap.add_argument("--api-key", default=os.environ.get("EGRET_API_KEY"))
    ap.add_argument("--tls-ca", help="PEM roots to trust: connect with TLS")
    args = ap.parse_args()
    pb = load_messages()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    req = pb.GenerateRequest(use_template=True, max_new_tokens=args.max_new_tokens)
    for image, text in args.example:
        req.examples.add(image=read(image), text=text)
    req.parts.add(image=read(args.image))
    if args.prompt:
        req.parts.add(text=args.prompt)

    if args.tls_ca:
        channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(read(args.tls_ca)))
    else:
        channel = grpc.insecure_channel(args.server)
    metadata = [("authorization", "Bearer " + args.api_key)] if args.api_key else None
    # No generated stubs needed: a method is its path plus how to (de)serialize its messages.
    generate = channel.unary_unary("/egret.v1.Egret/Generate",
                                   request_serializer=pb.GenerateRequest.SerializeToString,
                                   response_deserializer=pb.GenerateResponse.FromString)
    generate_stream = channel.unary_stream("/egret.v1.Egret/GenerateStream",
                                           request_serializer=pb.GenerateRequest.SerializeToString,
                                           response_deserializer=pb.GenerateResponse.FromString)
    last = None
    try:
        if args.stream:
            for msg in generate_stream(req, metadata=metadata, timeout=300):
                print(msg.text, end="", flush=True)
                if msg.HasField("usage"):
                    last = msg
            print()
        else:
            last = generate(req, metadata=metadata, timeout=300)
            print(last.text)
    except grpc.RpcError as e:
        sys.exit(f"egret_client.py: {e.code().name}: {e.details()}")
    finally:
        channel.close()
    if last is not None:
        u = last.usage
        print(f"{u.prompt_tokens} prompt tokens, {u.generated_tokens} generated "
              f"({pb.FinishReason.Name(last.finish_reason)}), {u.total_s:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
