"""``workbench serve`` (an engine behind the Open Inference Protocol on Ray Serve, until Ctrl-C)
and ``workbench batch`` (an engine over a folder of feed files on Ray Data).

Both check the engine (and the feed files) before Ray starts, so a user error is one line and
exit 2 without waiting for a cluster. Ray is optional: without it both say how to install it.
"""

from __future__ import annotations

import signal
import sys
import time

from .common import CliError, load_engine, printable


def cmd_serve(args) -> int:
    engine = load_engine(args.engine)
    from ..serve import require_ray, start

    require_ray("workbench serve")  # before saying that it starts

    options = {}
    if args.max_body_mb is not None:
        if args.max_body_mb <= 0:
            raise CliError(f"--max-body-mb must be more than 0, got {args.max_body_mb:g}")
        options["max_body_bytes"] = int(args.max_body_mb * (1 << 20))
    if args.max_ongoing is not None:
        options["max_ongoing_requests"] = args.max_ongoing
    print(f"starting Ray Serve for {printable(args.engine)} ({engine.backend})...", file=sys.stderr, flush=True)
    server = start(args.engine, name=args.name, host=args.host, port=args.port, replicas=args.replicas,
                   max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, address=args.address, **options)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        print(f"serving model {printable(server.name)} at {server.model_url}")
        print(f"  health:  curl {server.url}/v2/health/ready")
        for line in server.curl_example(engine).splitlines():
            print("  " + line)
        print("Ctrl-C stops it", flush=True)
        wait_for_ctrl_c()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


def wait_for_ctrl_c() -> None:
    while True:
        time.sleep(3600)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def cmd_batch(args) -> int:
    load_engine(args.engine)
    from ..batch import infer

    result = infer(args.inputs, args.engine, outputs=args.outputs, format=args.format, batch_size=args.batch_size,
                   concurrency=args.concurrency, address=args.address,
                   progress=sys.stderr.isatty() and not args.quiet)
    print(f"wrote the outputs of {result['rows']:,} rows to {result['files']:,} {result['format']} files in "
          f"{printable(result['outputs'])}")
    return 0


def add_commands(sub, positive, nonneg_float) -> None:
    """The ``serve`` and ``batch`` subcommands with every option (``parser.make_parser`` calls this)."""
    s = sub.add_parser("serve", help="serve an engine over HTTP (Open Inference Protocol v2) on Ray Serve",
                       description="Serve an engine over HTTP with the Open Inference Protocol (KServe v2) on Ray "
                                   "Serve, batching concurrent requests, until Ctrl-C. Needs workbench[serve].")
    s.add_argument("engine", help="the engine file")
    s.add_argument("--port", type=positive, default=8000, help="HTTP port")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--name", help="model name in the URLs (default: the engine file's stem)")
    s.add_argument("--replicas", type=positive, metavar="N",
                   help="replicas of the engine (default: one per GPU for a GPU engine, 1 for a CPU engine)")
    s.add_argument("--max-batch", type=positive, metavar="B",
                   help="rows batched into one engine run (default: the engine's largest batch)")
    s.add_argument("--batch-wait-ms", type=nonneg_float, default=5.0, metavar="T",
                   help="how long a batch waits for more requests")
    s.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to serve on, e.g. auto or ray://head:10001 (default: a local Ray instance)")
    s.add_argument("--max-body-mb", type=nonneg_float, metavar="MB", help="largest request body (default: 128)")
    s.add_argument("--max-ongoing", type=positive, metavar="N",
                   help="requests one replica holds at once; the rest wait in Ray Serve's router, which retries "
                        "with a backoff (default: 8 batches of one-row requests, at least 64)")
    s.set_defaults(fn=cmd_serve)

    b = sub.add_parser("batch", help="run an engine over a folder of feed files on Ray Data",
                       description="Run an engine over every .npz feed file of a folder (keys: input names, dim 0: "
                                   "rows) with one engine per Ray Data actor, and write each file's outputs to "
                                   "OUTPUTS/<stem>.npz (or Parquet parts). Needs workbench[serve].")
    b.add_argument("engine", help="the engine file")
    b.add_argument("--inputs", required=True, metavar="DIR", help="folder of .npz feed files")
    b.add_argument("--outputs", required=True, metavar="DIR", help="folder to write the outputs to (made if missing)")
    b.add_argument("--format", choices=["npz", "parquet"], default="npz", help="output file format")
    b.add_argument("--batch-size", type=positive, metavar="B",
                   help="rows per engine batch (default: the engine's largest batch)")
    b.add_argument("--concurrency", type=positive, metavar="N",
                   help="engine actors (default: one per GPU, or half the CPUs for a CPU engine)")
    b.add_argument("--address", metavar="ADDR", help="Ray cluster to run on (default: a local Ray instance)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=cmd_batch)
