"""Memory of ``autellix serve`` under refused calls (issue 15, finding 6): RSS growth over many
calls, each with a fresh program id, that the server refuses.

```bash
python benches/soak_rejected.py                   # 100,000 calls: 400s (over the KV capacity)
python benches/soak_rejected.py --kind queue-full # 429s from a server started with --max-queued 0
python benches/soak_rejected.py --calls 20000     # a shorter run
```

Starts ``python -m autellix serve`` (the simulated engine), warms it up with ``--warmup`` refused
calls, then sends ``--calls`` more from ``--clients`` threads and prints the server's RSS
(``/proc/<pid>/status``, Linux) after the warm-up and at the end, and the growth between them.
"""

from __future__ import annotations

import argparse
import itertools
import threading
from pathlib import Path

import httpx
from _procs import autellix_serve, free_port, loopback_url, serving

#: per kind: the server options, and the fields that get each call refused
KINDS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "kv-limit": ((), {"max_tokens": 1_000_000}),  # over the simulated engine's KV capacity: 400
    "queue-full": (("--max-queued", "0"), {"max_tokens": 2}),  # 429
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc: Linux only")


def refuse(url: str, fields: dict[str, object], ids: itertools.count[int], calls: int, clients: int) -> None:
    """Send ``calls`` refused calls from ``clients`` threads, each with a fresh program id."""
    lock = threading.Lock()
    left = [calls]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as h:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                    n = next(ids)
                body = {"model": "autellix-sim", "messages": [{"role": "user", "content": "hi"}], **fields}
                status = h.post("/v1/chat/completions", json={**body, "program_id": f"p-{n}"}).status_code
                if status not in (400, 429):
                    raise SystemExit(f"expected a refusal, got HTTP {status}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100_000, help="refused calls measured (default 100000)")
    parser.add_argument("--warmup", type=int, default=5_000, help="refused calls before the first reading")
    parser.add_argument("--kind", choices=sorted(KINDS), default="kv-limit", help="how calls are refused")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    args = parser.parse_args()
    options, fields = KINDS[args.kind]
    port = free_port()
    url = loopback_url(port)
    ids = itertools.count()
    with serving(autellix_serve(port, *options), url, "autellix serve") as proc:
        refuse(url, fields, ids, args.warmup, args.clients)
        before = rss_mb(proc.pid)
        refuse(url, fields, ids, args.calls, args.clients)
        after = rss_mb(proc.pid)
    print(
        f"{args.kind}: RSS {before:.1f} MB after {args.warmup} warm-up calls, {after:.1f} MB after "
        f"{args.calls} more: {after - before:+.1f} MB"
    )


if __name__ == "__main__":
    main()
